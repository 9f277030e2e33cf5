"""Records: validation, immutability and the JSON round-trip of every record type."""

from __future__ import annotations

import json
import subprocess
import sys

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consist import records as R

labels = st.text(min_size=1, max_size=12)
unit = st.floats(0, 1, allow_nan=False)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
jsonish = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8) | finite,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
evidence = st.dictionaries(st.text(min_size=1, max_size=6), jsonish, max_size=4)


@st.composite
def regions(draw):
    x0, y0 = draw(finite), draw(finite)
    w, h = draw(st.floats(0.5, 1e4)), draw(st.floats(0.5, 1e4))
    if draw(st.booleans()):
        return R.Region(box=(x0, y0, x0 + w, y0 + h))
    pts = draw(st.lists(st.tuples(finite, finite), min_size=3, max_size=6))
    return R.Region(polygon=pts)


embeddings = st.none() | st.lists(st.floats(-10, 10, width=32), min_size=1, max_size=8).map(np.asarray)
samples = st.builds(
    R.Sample,
    id=labels,
    uri=st.none() | st.text(max_size=20),
    label=st.none() | labels,
    provenance=st.sampled_from(list(R.Provenance)),
    region=st.none() | regions(),
    embedding=embeddings,
    meta=evidence,
)
queries = st.builds(R.Query, id=labels, uri=st.none() | st.text(max_size=10), region=st.none() | regions(), embedding=embeddings, meta=evidence)
candidates = st.builds(R.Candidate, label=labels, score=unit, source=st.text(max_size=5))
predictions = st.builds(R.Prediction, query=queries, candidates=st.lists(candidates, min_size=1, max_size=4), recognizer=st.text(max_size=5))
neighbours = st.builds(R.Neighbour, sample=samples, similarity=finite, rank=st.integers(0, 100), source=st.text(max_size=5))
votes = st.builds(R.Vote, checker=labels, label=labels, support=unit, confidence=unit, evidence=evidence, neighbour_id=st.none() | labels)
runs = st.builds(R.CheckerRun, checker=labels, status=st.sampled_from(list(R.RunStatus)), reason=st.text(max_size=10), elapsed_s=st.floats(0, 10), n_votes=st.integers(0, 5))
locs = st.builds(R.Localisation, sample_id=labels, region=regions(), checker=labels, score=unit)
decisions = st.builds(
    R.Decision,
    query_id=labels,
    label=labels,
    confidence=unit,
    changed=st.booleans(),
    predicted_label=labels,
    scores=st.dictionaries(labels, finite, max_size=3),
    votes=st.lists(votes, max_size=3),
    runs=st.lists(runs, max_size=3),
    localisations=st.lists(locs, max_size=2),
    elapsed_s=st.floats(0, 5),
    adapted=st.none() | st.text(max_size=10),
)
history = st.builds(
    R.HistoryEntry,
    seq=st.integers(1, 10**6),
    ts=st.floats(0, 2e9),
    action=labels,
    sample_id=labels,
    provenance=st.sampled_from(list(R.Provenance)),
    reason=st.text(max_size=10),
    before=st.none() | evidence,
    after=st.none() | evidence,
    undoes=st.none() | st.integers(1, 99),
    undone_by=st.none() | st.integers(1, 99),
)


@settings(max_examples=60, deadline=None)
@given(st.one_of(samples, queries, candidates, predictions, neighbours, votes, runs, locs, decisions, history, regions()))
def test_every_record_round_trips_through_json(record):
    text = record.to_json()
    assert json.loads(text) == record.to_dict()  # plain JSON, nothing Python-specific
    again = type(record).from_json(text)
    assert again == record


def test_records_are_frozen():
    v = R.Vote("c", "cat", 0.5)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        v.label = "dog"  # type: ignore[misc]
    s = R.Sample("a", embedding=[1, 2])
    with pytest.raises(ValueError):
        s.embedding[0] = 5  # read-only array


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda: R.Vote("c", "cat", 1.5), "support must be in \\[0, 1\\]"),
        (lambda: R.Vote("c", "cat", 0.5, confidence=-0.1), "confidence must be in"),
        (lambda: R.Candidate("cat", 2.0), "probability in \\[0, 1\\]"),
        (lambda: R.Prediction(R.Query("q"), []), "no candidates"),
        (lambda: R.Region(box=(5, 5, 1, 1)), "is empty"),
        (lambda: R.Region(polygon=[(0, 0), (1, 1)]), "at least 3 vertices"),
        (lambda: R.Region(), "a box or a polygon"),
        (lambda: R.Sample("a", embedding=np.zeros((2, 2))), "one-dimensional"),
        (lambda: R.Sample("a", provenance="robot"), "robot"),
    ],
)
def test_validation_messages(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_region_geometry():
    r = R.Region(polygon=[(0, 0), (4, 1), (2, 5)])
    assert r.bounds == (0, 0, 4, 5)
    assert R.Region.from_box(0, 0, 2, 3).vertices == ((0, 0), (2, 0), (2, 3), (0, 3))


def test_decision_views():
    d = R.Decision(
        query_id="q",
        label="cat",
        confidence=0.9,
        changed=True,
        predicted_label="dog",
        votes=[R.Vote("a", "cat", 0.9), R.Vote("b", "dog", 0.2)],
        runs=[R.CheckerRun("a", "ran"), R.CheckerRun("b", "failed", "boom"), R.CheckerRun("c", "skipped", "confident")],
    )
    assert [r.checker for r in d.skipped] == ["c"]
    assert [r.checker for r in d.abstained] == ["b"]
    assert [v.checker for v in d.votes_for("cat")] == ["a"]


def test_core_import_is_light():
    code = "import sys, consist, consist.metrics; consist.open_store('memory://'); print(sorted(m for m in ('cv2','torch','kornia','skimage','sklearn') if m in sys.modules))"
    import os

    env = {**os.environ, "CONSIST_PLUGINS": "none"}  # the core alone: plugins may be heavy
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"
