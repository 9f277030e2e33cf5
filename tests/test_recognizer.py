"""wrap(): any callable becomes a self-correcting recognizer; adaptation and feedback."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import consist
from consist import Provenance, Region, Sample, wrap
from consist.recognizer import to_candidates


@pytest.fixture
def photo_store(tmp_path, photos, store):
    from consist.demo import perspective
    from consist.plugins import embedders

    emb = embedders()["tiny"]
    samples = []
    for label in ("cat", "coffee", "astronaut", "rocket"):
        for view, kw in {"a": {}, "b": {"gain": 0.8, "crop": (0.05, 0.05, 0.95, 0.95)}}.items():
            p = tmp_path / f"{label}-{view}.png"
            Image.fromarray(perspective(photos[label], **kw)).save(p)
            samples.append(Sample(f"{label}-{view}", uri=str(p), label=label, embedding=emb.embed(p)))
    store.put(samples)
    return store


@pytest.mark.parametrize(
    "output",
    [
        [("cat", 0.7), ("dog", 0.2)],
        {"dog": 0.2, "cat": 0.7},
        [consist.Candidate("cat", 0.7), consist.Candidate("dog", 0.2)],
        ([("cat", 0.7), ("dog", 0.2)], [1.0, 0.0, 0.0]),
    ],
)
def test_recognizer_output_forms(output):
    cands, emb = to_candidates(output)
    assert [c.label for c in cands] == ["cat", "dog"] and cands[0].score == pytest.approx(0.7)
    assert emb is None or emb.shape == (3,)


def test_logits_and_bad_scores():
    cands, _ = to_candidates([("a", 2.0), ("b", 0.0)], scores="logits")
    assert cands[0].score == pytest.approx(1 / (1 + np.exp(-2)))
    with pytest.raises(consist.ConsistError, match="outside \\[0, 1\\]"):
        to_candidates([("a", 3.0)])
    with pytest.raises(consist.ConsistError, match="no candidates"):
        to_candidates([])


def test_knn_recognizer_recognises_a_new_view(photo_store, photos):
    from consist.demo import perspective

    rec = wrap(None, photo_store, checkers=["knn"])
    d = rec.predict(perspective(photos["coffee"], gain=1.1, crop=(0.02, 0.0, 1.0, 0.97)))
    assert d.label == "coffee" and d.predicted_label == "coffee"
    assert {v.label for v in d.votes} >= {"coffee"}


def test_wrapped_callable_is_corrected_and_adapted(photo_store, photos):
    class AlwaysDog(consist.BaseChecker):
        name = "says-cat"

        def check(self, prediction, neighbours, context):
            # a stand-in for a verifier: supports the label of the most similar neighbour
            best = max(neighbours, key=lambda n: n.similarity)
            return [self.vote(best.sample.label, 0.999, neighbour=best)]

    calls = []

    def wrong_recognizer(image):
        calls.append(image.shape)
        return [("rocket", 0.55), ("cat", 0.40)]

    rec = wrap(wrong_recognizer, photo_store, checkers=[AlwaysDog()], k=4)
    d = rec.predict(photos["cat"], id="query-cat")
    assert calls and d.predicted_label == "rocket"
    assert d.label == "cat" and d.changed and d.confidence > 0.9
    assert d.adapted.startswith("added query-cat as 'cat' (auto")
    stored = photo_store.get("query-cat")
    assert stored.provenance is Provenance.AUTO and stored.label == "cat"
    assert stored.uri == "artefact://query-cat/image"  # pixels kept in the store
    assert consist.load_image(stored.uri, store=photo_store).shape == photos["cat"].shape
    assert stored.meta["verified_by"] == ["says-cat"]
    # the next query finds the adapted sample as a neighbour
    again = rec.engine.neighbours(rec.prediction(photos["cat"], id="other-id"), 2)
    assert "query-cat" in {n.sample.id for n in again}  # ("cat-a" is the same photo: a tie)
    assert all(n.similarity > 0.999 for n in again)


def test_user_feedback_has_highest_trust(photo_store, photos):
    rec = wrap(lambda img: [("cat", 0.9)], photo_store, checkers=["knn"])
    entries = rec.correct("cat-a", "tabby", region=Region(box=(10, 10, 200, 200)))
    assert [e.action for e in entries] == ["relabel", "region"]
    s = photo_store.get("cat-a")
    assert s.label == "tabby" and s.provenance is Provenance.USER and s.region.box == (10, 10, 200, 200)
    # an automatic decision cannot overwrite it
    from consist.adapt import adapt_decision

    p = consist.Prediction(consist.Query("cat-a", uri=s.uri), [consist.Candidate("cat", 0.9)])
    d = consist.Decision(query_id="cat-a", label="cat", confidence=0.99, changed=False, predicted_label="cat", votes=[consist.Vote("x", "cat", 0.99)], runs=[consist.CheckerRun("x", "ran", n_votes=1)])
    assert "keeps its user label 'tabby'" in adapt_decision(d, p, photo_store)
    assert photo_store.get("cat-a").label == "tabby"
    assert photo_store.history(limit=1)[0].action == "conflict"


def test_feedback_on_unknown_sample_needs_an_image(store):
    with pytest.raises(consist.SampleNotFound, match="give its image uri"):
        consist.correct(store, "new", "cat")
    consist.correct(store, "new", "cat", uri="/some/img.png")
    assert store.get("new").provenance is Provenance.USER


def test_low_confidence_is_not_adapted(photo_store, photos):
    rec = wrap(lambda img: [("cat", 0.5), ("rocket", 0.5)], photo_store, checkers=["knn"])
    d = rec.predict(photos["rocket"])
    assert d.adapted.startswith("not adapted: confidence")
    assert len(photo_store) == 8


def test_wrap_with_a_retriever_that_needs_no_embedding(photo_store, photos):
    class ByLabel:
        name = "by-label"

        def retrieve(self, query, store, k, *, exclude=(), features=None):
            return [consist.Neighbour(s, 0.5, i, self.name) for i, s in enumerate(store.samples(label="rocket"))][:k]

    class Echo(consist.BaseChecker):
        name = "echo"

        def check(self, prediction, neighbours, context):
            return [self.vote(n.sample.label, 0.99, neighbour=n) for n in neighbours[:1]]

    rec = wrap(lambda img: [("cat", 0.6)], photo_store, embedder=None, checkers=[Echo()], retriever=ByLabel())
    d = rec.predict(photos["cat"])
    assert d.votes and d.votes[0].neighbour_id.startswith("rocket") and d.label == "rocket"
