"""consist-spatial replaced under the topological plugin: with it switched off, a third
party's extractor (ORB), pair verifier and retriever, written from the documented
contracts only, build the matching graph and feed the community vote."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import rotate, shrink, skimage_data, warp

import consist
from consist import plugins
from consist.contracts import CheckContext, FeatureSpec
from consist.datasets import read_dataset
from consist.errors import ConsistError
from consist.features import features_for
from consist.records import Candidate, Prediction, Query, Sample
from consist_topological import CommunityVoteChecker, GraphConfig, MatchingHypergraph
from consist_topological.hypergraph import edges_kind
from consist_topological.providers import pair_verifier

PLUGIN = '''
import cv2
import numpy as np
import consist
from consist import plugins
from consist.contracts import BaseChecker, FeatureSpec, LocalFeatures, PairEvidence
from consist.features import features_for
from consist.records import Neighbour, Query

ORB = FeatureSpec("orb-topo")


class OrbExtractor:
    def __init__(self, max_keypoints=1000, **_options):
        self.max_keypoints = int(max_keypoints)

    @property
    def kind(self):
        return f"features/orb-topo-{self.max_keypoints}"

    def extract(self, image):
        gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
        kps, desc = cv2.ORB_create(nfeatures=self.max_keypoints).detectAndCompute(gray, None)
        size = (gray.shape[1], gray.shape[0])
        if desc is None:
            return LocalFeatures(np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros((0, 32), np.uint8), size, 1.0, self.kind)
        return LocalFeatures(np.array([k.pt for k in kps]), np.array([k.size for k in kps]), np.array([k.angle for k in kps]), desc, size, 1.0, self.kind)


def _features(item, store, features):
    if isinstance(item, Query) and item.image is None and store is not None:
        stored = store.get(item.id)
        if stored is not None and stored.uri == item.uri:
            item = stored
    return features_for(item, store, plugins.make_extractor(features or ORB))


def _matches(f1, f2):
    if len(f1) < 2 or len(f2) < 2:
        return np.zeros((0, 2), np.int64)
    found = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(f1.descriptors, f2.descriptors)
    return np.array([(m.queryIdx, m.trainIdx) for m in found if m.distance < 64], np.int64).reshape(-1, 2)


class OrbVerifier(BaseChecker):
    """Pairs only: cross-checked ORB matches, RANSAC homography."""

    name = "orb-verify"
    enabled_by_default = False

    def validate_options(self, options):
        unknown = set(options) - {"min_inliers"}
        if unknown:
            raise ValueError(f"unknown orb-verify option(s) {sorted(unknown)}")

    def check(self, prediction, neighbours, context):
        raise consist.Abstain("verifies pairs on request only")

    def verify_pair(self, query, neighbour, store, *, region=None, features=None, options=None):
        self.validate_options(options or {})
        need = int((options or {}).get("min_inliers", 25))
        qf, nf = _features(query, store, features), _features(neighbour, store, features)
        m = _matches(qf, nf)
        if len(m) < need:
            return PairEvidence(neighbour.id, False, reason=f"{len(m)} matches")
        H, mask = cv2.findHomography(qf.keypoints[m[:, 0]], nf.keypoints[m[:, 1]], cv2.RANSAC, 5.0)
        inl = m[mask.ravel().astype(bool)] if H is not None else m[:0]
        return PairEvidence(
            neighbour.id, len(inl) >= need, inliers=len(inl), score=len(inl), model="homography", matrix=H,
            query_points=qf.keypoints[inl[:, 0]], neighbour_points=nf.keypoints[inl[:, 1]],
            query_indices=inl[:, 0], neighbour_indices=inl[:, 1],
        )


class OrbRetriever:
    """Every stored image, ranked by cross-checked ORB matches with the query."""

    name = "orb-retriever"

    def prepare(self, store, *, features=None, progress=None):
        pass

    def retrieve(self, query, store, k, *, exclude=(), features=None):
        qf = _features(query, store, features)
        skip = set(exclude) | {query.id}
        scored = sorted(((-len(_matches(qf, _features(s, store, features))), s.id, s) for s in store.samples() if s.id not in skip), key=lambda t: t[:2])
        return [Neighbour(sample=s, similarity=float(-n), rank=i, source=self.name) for i, (n, _id, s) in enumerate(scored[:k])]


@consist.hookimpl
def consist_register_extractors(register):
    register("orb-topo", OrbExtractor)


@consist.hookimpl
def consist_register_checkers(register):
    register(OrbVerifier())


@consist.hookimpl
def consist_register_retrievers(register):
    register(OrbRetriever())
'''

SOURCES = {"features": "orb-topo", "verifier_checker": "orb-verify", "retriever": "orb-retriever"}


def _only(monkeypatch: pytest.MonkeyPatch, names: str) -> Iterator[None]:
    monkeypatch.setenv("CONSIST_PLUGINS", names)
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plugin installed the way pip would, and consist-spatial switched off."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "topo_third_party.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "topo_third_party-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: topo-third-party\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[consist]\ntopo_third_party = topo_third_party\n")
    monkeypatch.syspath_prepend(str(site))
    yield from _only(monkeypatch, "topological,topo_third_party")


@pytest.fixture
def topological_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from _only(monkeypatch, "topological")


def label(node: str) -> str:
    return node.split("/")[0]


def test_a_third_party_builds_the_graph_and_feeds_the_community_vote(third_party: None, dataset: Path, tmp_path: Path) -> None:
    assert "spatial" not in plugins.checkers() and "asmk" not in plugins.retrievers() and "sift" not in plugins.extractors()
    store = consist.open_store(f"sqlite:///{tmp_path / 'orb.db'}")
    store.put([Sample(id=it.id, uri=it.uri, label=it.label, provenance="import") for it in read_dataset(dataset)], reason="test")
    graph = MatchingHypergraph(GraphConfig(k=200, **SOURCES))
    report = graph.build(store)
    assert report.added == 12 and report.verified_pairs == 66, "every pair once (k covers the store)"
    assert graph.n_edges >= 12
    for a, b in graph.g.edges:
        assert label(a) == label(b), f"hyperedge between {a} and {b}"
    kinds = store.artefact_kinds()
    assert edges_kind("features/orb-topo-1000") in kinds and not any("sift" in k for k in kinds), kinds
    a, b = next(iter(graph.g.edges))
    e = graph.edge(a, b)
    fa = features_for(store.get(e.a), store, plugins.make_extractor(FeatureSpec("orb-topo")))
    np.testing.assert_array_equal(fa.keypoints[e.idx_a.astype(int)], e.pts_a)

    checker = CommunityVoteChecker(**SOURCES)
    retriever = plugins.retrievers()["orb-retriever"]
    # a stored image under a wrong label: its graph community carries the right one
    s = store.get("cat/crop.png")
    pred = Prediction(query=Query(s.id, uri=s.uri), candidates=(Candidate("astronaut", 0.8),))
    votes = {v.label: v for v in checker.check(pred, retriever.retrieve(pred.query, store, 10, exclude=(s.id,)), CheckContext(store=store))}
    assert votes["cat"].support > 0.8 and votes["astronaut"].support < 0.3
    # a new image: linked to the graph by the third party's verifier
    held = np.clip(warp(rotate(shrink(skimage_data.coffee()), 10, 0.9), 0.05, 0.1).astype(np.float32) * 1.1, 0, 255).astype(np.uint8)
    pred = Prediction(query=Query("q-coffee", image=held), candidates=(Candidate("cat", 0.8),))
    votes = {v.label: v for v in checker.check(pred, retriever.retrieve(pred.query, store, 10), CheckContext(store=store))}
    assert votes["coffee"].support > 0.8 and votes["coffee"].evidence["direct_links"] >= 1
    store.close()


def test_without_a_pair_verifier_the_error_names_the_option(topological_only: None) -> None:
    with pytest.raises(ConsistError, match="verifier_checker"):
        pair_verifier("spatial")
    with pytest.raises(ValueError, match="no registered extractor"):
        GraphConfig(features="orb-topo").validate()
