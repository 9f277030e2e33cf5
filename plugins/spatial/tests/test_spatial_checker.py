from __future__ import annotations

import json
import math

import attrs
import numpy as np
import pytest
from shapely.geometry import Polygon, box

import consist
from consist import Candidate, CheckContext, Engine, EngineConfig, Neighbour, Prediction, Query, Region, Sample
from consist.contracts.checker import Abstain
from consist.records import RunStatus
from consist_spatial import SpatialChecker, SpatialConfig

LABELS = {"chelsea": "cat", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket"}
FAST = {"max_side": 640}


@pytest.fixture
def store(photo_files):
    s = consist.open_store("memory://")
    s.put([Sample(id=name, uri=str(path), label=LABELS[name]) for name, path in photo_files.items()])
    yield s
    s.close()


def _neighbours(store, order=("coffee", "chelsea", "rocket", "astronaut"), sims=(0.9, 0.8, 0.5, 0.4)):
    return [Neighbour(store.get(sid), sim, rank) for rank, (sid, sim) in enumerate(zip(order, sims))]


def _wrong_prediction(image):
    return Prediction(Query(id="q-cat", image=image), [Candidate("coffee", 0.6), Candidate("cat", 0.3)])


def test_registered_through_the_entry_point() -> None:
    import importlib.metadata

    eps = [ep for ep in importlib.metadata.entry_points(group="consist") if ep.name == "spatial"]
    assert eps and eps[0].value == "consist_spatial.plugin"
    consist.plugins.reset_plugins()
    found = consist.plugins.checkers()
    assert isinstance(found["spatial"], SpatialChecker)
    info = {i.name: i for i in consist.plugins.plugin_infos()}["spatial"]
    assert info.distribution == "consist-spatial" and info.checkers == ("spatial",)


def test_checker_attributes() -> None:
    c = SpatialChecker()
    assert (c.name, c.cost, c.timeout) == ("spatial", 0.5, 120.0)
    assert isinstance(c, consist.Checker)
    cfg = c.config
    assert (cfg.k, cfg.ratio, cfg.min_inliers, cfg.model, cfg.estimator, cfg.max_side, cfg.max_keypoints) == (10, 0.8, 15, "homography", "degensac", 1024, 2048)


def test_engine_corrects_a_wrong_prediction(store, warped) -> None:
    engine = Engine(checkers=["knn", "spatial"], store=store, config=EngineConfig(checker_options={"spatial": FAST}, adapt=False))
    prediction = _wrong_prediction(warped["chelsea"])
    decision = engine.verify(prediction, _neighbours(store))
    assert decision.predicted_label == "coffee"
    assert decision.label == "cat" and decision.changed
    runs = {r.checker: r for r in decision.runs}
    assert runs["spatial"].status is RunStatus.RAN, runs["spatial"].reason
    spatial = [v for v in decision.votes if v.checker == "spatial"]
    assert len({v.label for v in spatial}) == len(spatial)  # at most one vote per label
    cat = next(v for v in spatial if v.label == "cat")
    assert cat.support > 0.9 and cat.confidence > 0.7 and cat.neighbour_id == "chelsea"
    assert cat.evidence["inliers"] >= 50 and cat.evidence["model"] == "homography"
    coffee = next(v for v in spatial if v.label == "coffee")
    assert coffee.support < 0.5 and coffee.neighbour_id is None
    assert {"rocket", "astronaut"}.isdisjoint(v.label for v in spatial)  # tried, failed, not candidates
    json.dumps([v.evidence for v in decision.votes])  # evidence is JSON-able
    # the engine localised the query in the cat sample: the whole 451x300 photo
    (loc,) = decision.localisations
    assert loc.sample_id == "chelsea" and loc.checker == "spatial"
    poly = Polygon(loc.region.vertices)
    frame = box(-0.5, -0.5, 450.5, 299.5)
    assert poly.intersection(frame).area / poly.union(frame).area > 0.8
    # features of the neighbours were cached in the store
    assert store.artefact_kinds().get("features/sift-rootsift-640-2048") == 4


def test_second_call_reads_features_from_the_store(store, warped, monkeypatch) -> None:
    checker = SpatialChecker(**FAST)
    ctx = CheckContext(store=store)
    prediction = _wrong_prediction(warped["chelsea"])
    first = checker.check(prediction, _neighbours(store), ctx)
    from consist_spatial import features as features_mod

    calls = []
    real = features_mod.SiftExtractor.extract_gray
    monkeypatch.setattr(features_mod.SiftExtractor, "extract_gray", lambda self, img, size: calls.append(1) or real(self, img, size))
    second = checker.check(prediction, _neighbours(store), ctx)
    assert len(calls) == 1  # only the (uncached) query
    assert [(v.label, v.support) for v in first] == [(v.label, v.support) for v in second]


def test_options_come_from_the_context(store, warped) -> None:
    checker = SpatialChecker(**FAST)
    prediction = _wrong_prediction(warped["chelsea"])
    votes = checker.check(prediction, _neighbours(store), CheckContext(store=store, config={"k": 1}))
    # only the best-ranked neighbour (coffee) is tried: one vote against, nothing for cat
    assert [(v.label, v.support < 0.5) for v in votes] == [("coffee", True)]
    votes = checker.check(prediction, _neighbours(store), CheckContext(store=store, config={"model": "fundamental", "estimator": "magsac"}))
    cat = next(v for v in votes if v.label == "cat")
    assert cat.evidence["model"] == "fundamental" and cat.evidence["polygon_source"] == "inlier_hull"
    with pytest.raises(ValueError, match="unknown spatial option"):
        checker.check(prediction, _neighbours(store), CheckContext(store=store, config={"kk": 3}))
    with pytest.raises(ValueError):
        SpatialConfig(model="affine")


def test_unknown_option_fails_when_the_engine_is_built(store, warped) -> None:
    import consist

    with pytest.raises(consist.ConsistError, match="checker 'spatial': bad options: unknown spatial option.*ratios"):
        Engine(checkers=["spatial"], store=store, config=EngineConfig(checker_options={"spatial": {"ratios": 0.7}}, adapt=False))
    # options that bypass the engine's check (a checker used directly) still fail per call
    with pytest.raises(ValueError, match="ratios"):
        SpatialChecker(**FAST).check(_wrong_prediction(warped["chelsea"]), _neighbours(store), CheckContext(store=store, config={"ratios": 0.7}))


def test_abstains_without_anything_to_check(store, photos) -> None:
    checker = SpatialChecker(**FAST)
    blank = Prediction(Query(id="blank", image=np.full((200, 300, 3), 90, np.uint8)), [Candidate("cat", 0.5)])
    with pytest.raises(Abstain, match="0 keypoints"):
        checker.check(blank, _neighbours(store), CheckContext(store=store))
    with pytest.raises(Abstain, match="no labelled neighbour"):
        checker.check(_wrong_prediction(photos["chelsea"]), [], CheckContext(store=store))
    with pytest.raises(Abstain, match="unreadable"):
        checker.check(Prediction(Query(id="nothing"), [Candidate("cat", 0.5)]), _neighbours(store), CheckContext(store=store))
    # a query unrelated to all neighbours and whose candidates none of them carry
    other = Prediction(Query(id="q", image=photos["rocket"]), [Candidate("dog", 0.5)])
    with pytest.raises(Abstain, match="verified no neighbour"):
        checker.check(other, _neighbours(store, order=("coffee", "chelsea"), sims=(0.9, 0.8)), CheckContext(store=store))
    engine = Engine(checkers=["spatial"], store=store, config=EngineConfig(checker_options={"spatial": FAST}, adapt=False))
    assert engine.verify(blank, _neighbours(store)).runs[0].status is RunStatus.ABSTAINED


def test_unreadable_neighbour_is_skipped(store, warped, tmp_path) -> None:
    broken = Sample(id="broken", uri=str(tmp_path / "gone.png"), label="cat")
    neighbours = [Neighbour(broken, 0.99, 0), *_neighbours(store)[1:2]]
    votes = SpatialChecker(**FAST).check(_wrong_prediction(warped["chelsea"]), neighbours, CheckContext(store=store))
    (cat,) = votes
    assert cat.label == "cat" and cat.support > 0.9 and cat.evidence["unreadable_neighbours"] == 1


def test_store_less_use_and_self_match_skipped(photo_files, warped) -> None:
    s = Sample(id="cat1", uri=str(photo_files["chelsea"]), label="cat")
    votes = SpatialChecker(**FAST).check(_wrong_prediction(warped["chelsea"]), [Neighbour(s, 0.9)], CheckContext())
    assert [v.label for v in votes] == ["cat"]
    q = Prediction(Query(id="cat1", uri=str(photo_files["chelsea"])), [Candidate("cat", 0.5)])
    with pytest.raises(Abstain):
        SpatialChecker(**FAST).check(q, [Neighbour(s, 1.0)], CheckContext())  # leave-one-out


def test_one_vote_per_label_from_several_verified_neighbours(photo_files, warped) -> None:
    samples = [Sample(id=f"cat{i}", uri=str(photo_files["chelsea"]), label="cat") for i in range(3)]
    votes = SpatialChecker(**FAST).check(_wrong_prediction(warped["chelsea"]), [Neighbour(s, 0.9, i) for i, s in enumerate(samples)], CheckContext())
    (cat,) = votes
    assert cat.evidence["verified_neighbours"] == 3 and len(cat.evidence["localisations"]) == 2
    assert all(o["polygon"] for o in cat.evidence["localisations"])
    # the engine turns them into one localisation per verified neighbour
    from consist.engine import _localisations

    assert sorted(loc.sample_id for loc in _localisations(votes)) == ["cat0", "cat1", "cat2"]


def test_query_region_and_sample_region(photo_files, warped, h_true) -> None:
    checker = SpatialChecker(**FAST)
    s = Sample(id="cat1", uri=str(photo_files["chelsea"]), label="cat")
    # the query asks about the cat's head only (in warped-image pixels)
    head = Region(polygon=[tuple(p) for p in np.array([[150, 60], [330, 40], [340, 210], [160, 230]], float)])
    q = Prediction(Query(id="q", image=warped["chelsea"], region=head), [Candidate("cat", 0.5)])
    (vote,) = checker.check(q, [Neighbour(s, 0.9)], CheckContext())
    assert vote.support > 0.6
    # its projection into the neighbour lies where the head is in the original photo
    Hinv = np.linalg.inv(h_true)
    from consist_spatial import project_points

    true = Polygon(project_points(Hinv, head.vertices)[0])
    got = Polygon(vote.evidence["polygon"])
    assert got.intersection(true).area / got.union(true).area > 0.8
    # a neighbour whose labelled region excludes the matched pixels does not verify the label
    corner = attrs.evolve(s, region=Region.from_box(0, 0, 60, 40))
    (against,) = checker.check(q, [Neighbour(corner, 0.9)], CheckContext())
    assert against.support < 0.5 and "labelled region" in against.evidence["rejected"][0]["reason"]


def test_support_and_confidence_curves() -> None:
    cfg = SpatialConfig()
    f = SpatialChecker.support_for
    assert f(15, cfg) == pytest.approx(0.6)
    assert f(35, cfg) == pytest.approx(0.6 + 0.39 * (1 - math.exp(-1)))
    assert f(10_000, cfg) == pytest.approx(0.99)
    assert f(20, cfg) < f(40, cfg) < f(80, cfg)
    c = SpatialChecker.confidence_for
    assert c(15, 0.0, cfg) == pytest.approx(0.4)
    assert c(10_000, 1.0, cfg) == pytest.approx(1.0)
    assert c(100, 0.01, cfg) < c(100, 0.3, cfg)
    r = SpatialChecker.reject_confidence_for
    assert r(1, cfg) == pytest.approx(0.3) and r(2, cfg) == pytest.approx(0.45) and r(50, cfg) <= 0.6
