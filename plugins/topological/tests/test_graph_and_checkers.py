"""The matching hypergraph on real photos (scikit-image's), kept in a real SQLite
store: built from ASMK neighbours and DEGENSAC verification, persisted, updated
incrementally; and the community label vote on top of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import EXTRACTOR, SPATIAL, rotate, shrink, skimage_data, warp

import consist
from consist.contracts.checker import Abstain, CheckContext
from consist.datasets import read_dataset
from consist.images import encode_png
from consist.records import Candidate, Prediction, Provenance, Query, Sample
from consist_spatial import AsmkIndex, AsmkRetriever
from consist_topological import CommunityVoteChecker, GraphConfig, MatchingHypergraph
from consist_topological.checkers import SIGNAL_LABELS, SIGNAL_UNCERTAINTY
from consist_topological.hypergraph import GRAPH_SAMPLE_ID, edges_kind

CONFIG = GraphConfig(k=200, spatial=SPATIAL)


@pytest.fixture(scope="module")
def store_uri(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('topo-store') / 'store.db'}"
    store = consist.open_store(uri)
    store.put([Sample(id=it.id, uri=it.uri, label=it.label, provenance="import") for it in read_dataset(dataset)], reason="test")
    AsmkIndex.train(store, EXTRACTOR)
    store.close()
    return uri


@pytest.fixture(scope="module")
def built(store_uri: str) -> tuple[consist.Store, MatchingHypergraph]:
    store = consist.open_store(store_uri, create=False)
    graph = MatchingHypergraph(CONFIG)
    report = graph.build(store, retriever=AsmkRetriever(extractor=EXTRACTOR))
    assert report.added == 12
    pairs = {frozenset((a, b)) for a, tried in graph.tried.items() for b in tried}
    assert report.verified_pairs == len(pairs), "each pair verified once, not from both sides"
    return store, graph


def label(node: str) -> str:
    return node.split("/")[0]


def test_graph_links_views_of_the_same_object_and_nothing_else(built: tuple[consist.Store, MatchingHypergraph]) -> None:
    store, graph = built
    assert len(graph) == 12
    for a, b, data in graph.g.edges(data=True):
        assert label(a) == label(b), f"hyperedge between {a} and {b}"
        e = data["h"]
        assert e.strength >= 15 and e.pts_a.shape == (e.strength, 2)
    for node in graph.g.nodes:
        assert any(label(o) == label(node) for o, _ in graph.edges_of(node)), f"{node} is isolated"
        assert 1 <= len(graph.tried[node]) <= 11, "k is capped by the store's size (ASMK returns only scores > 0)"
    # hyperedge points are real keypoints of the cached features
    from consist_spatial.features import features_for

    a, b = "cat/full.png", "cat/crop.png"
    e = graph.edge(a, b)
    fa = features_for(store.get(e.a), store, EXTRACTOR)
    np.testing.assert_allclose(fa.keypoints[e.idx_a.astype(int)], e.pts_a)
    stats = graph.stats()
    assert stats["components"] == 3 and stats["isolated"] == 0 and stats["hyperedge_bytes_per_image"] > 0


def test_graph_is_persisted_in_the_store_and_reloads_without_verifying(built: tuple[consist.Store, MatchingHypergraph]) -> None:
    store, graph = built
    assert store.get_artefact("cat/full.png", edges_kind(EXTRACTOR.kind)) is not None
    assert store.get_artefact(GRAPH_SAMPLE_ID, "topology/meta/" + EXTRACTOR.kind.split("/", 1)[1]) is not None
    again = MatchingHypergraph(CONFIG)
    report = again.build(store, retriever=AsmkRetriever(extractor=EXTRACTOR))
    assert report.verified_pairs == 0 and report.added == 0
    assert sorted(map(sorted, again.g.edges)) == sorted(map(sorted, graph.g.edges))
    for a, b in graph.g.edges:
        assert again.edge(a, b).strength == graph.edge(a, b).strength


def test_new_samples_are_added_incrementally_and_deleted_ones_leave(built: tuple[consist.Store, MatchingHypergraph], tmp_path: Path) -> None:
    store, graph = built
    img = shrink(skimage_data.astronaut())
    path = tmp_path / "astronaut-new.png"
    path.write_bytes(encode_png(np.clip(warp(rotate(img, -8, 0.85), 0.02, 0.15).astype(np.float32) * 1.2, 0, 255).astype(np.uint8)))
    before = {n: set(graph.g.adj[n]) for n in graph.g.nodes}
    store.put([Sample(id="astronaut/new.png", uri=str(path), label="astronaut", provenance=Provenance.AUTO)], reason="adaptation")
    report = graph.sync(store, retriever=AsmkRetriever(extractor=EXTRACTOR))
    assert report.added == 1 and report.verified_pairs <= 12, "only the new sample is verified against its top-k"
    linked = {o for o, _ in graph.edges_of("astronaut/new.png")}
    assert linked and all(label(o) == "astronaut" for o in linked)
    for n, adj in before.items():  # the rest of the graph is untouched, apart from the new links
        assert set(graph.g.adj[n]) - {"astronaut/new.png"} == adj
    assert graph.sync(store).added == 0, "nothing new: nothing done"
    store.delete("astronaut/new.png", reason="test")
    report = graph.sync(store, retriever=AsmkRetriever(extractor=EXTRACTOR))
    assert report.removed == 1 and "astronaut/new.png" not in graph


def _prediction(sample_id: str, uri: str | None, top: str, image: np.ndarray | None = None) -> Prediction:
    return Prediction(query=Query(id=sample_id, uri=uri, image=image), candidates=(Candidate(top, 0.8),))


def _neighbours(store: consist.Store, query: Query, k: int = 10) -> list:
    return AsmkRetriever(extractor=EXTRACTOR).retrieve(query, store, k)


def test_community_vote_catches_a_mislabelled_stored_image(built: tuple[consist.Store, MatchingHypergraph]) -> None:
    store, _graph = built
    checker = CommunityVoteChecker(spatial=SPATIAL)
    assert checker.prepare(store) is checker.prepare(store), "one graph per store and configuration"
    s = store.get("cat/crop.png")
    # the stored sample says "astronaut" (a wrong label); its verified neighbours are cats
    pred = _prediction(s.id, s.uri, "astronaut")
    nbrs = _neighbours(store, pred.query)
    assert s.id not in {n.sample.id for n in nbrs}
    ctx = CheckContext(store=store)
    votes = {v.label: v for v in checker.check(pred, nbrs, ctx)}
    assert set(votes) == {"cat", "astronaut"}
    assert votes["cat"].support > 0.8 and votes["cat"].evidence["members"] == 3
    assert votes["astronaut"].support < 0.3, "the predicted label has no share of the community"
    assert ctx.signals[SIGNAL_LABELS] == {"cat": 1.0}
    assert 0.0 <= ctx.signals[SIGNAL_UNCERTAINTY] <= np.log(11) + 1e-9
    # the right label gets only a vote for
    right = {v.label: v for v in checker.check(_prediction(s.id, s.uri, "cat"), nbrs, CheckContext(store=store))}
    assert set(right) == {"cat"}


def test_community_vote_links_a_new_query_and_abstains_when_isolated(built: tuple[consist.Store, MatchingHypergraph], noise_png: Path) -> None:
    store, _graph = built
    checker = CommunityVoteChecker(spatial=SPATIAL)
    held = np.clip(warp(rotate(shrink(skimage_data.coffee()), 10, 0.9), 0.05, 0.1).astype(np.float32) * 1.1, 0, 255).astype(np.uint8)
    pred = _prediction("q-coffee", None, "cat", image=held)
    ctx = CheckContext(store=store)
    votes = {v.label: v for v in checker.check(pred, _neighbours(store, pred.query), ctx)}
    assert votes["coffee"].support > 0.8 and votes["cat"].support < 0.5
    assert votes["coffee"].evidence["direct_links"] >= 1
    noise = _prediction("q-noise", str(noise_png), "cat")
    ctx = CheckContext(store=store)
    with pytest.raises(Abstain, match="isolated"):
        checker.check(noise, _neighbours(store, noise.query), ctx)
    assert SIGNAL_UNCERTAINTY in ctx.signals


def test_engine_runs_the_community_checker_by_name_with_options(built: tuple[consist.Store, MatchingHypergraph]) -> None:
    store, _graph = built
    engine = consist.Engine(["community"], store=store, retriever=AsmkRetriever(extractor=EXTRACTOR), config=consist.EngineConfig(adapt=False, checker_options={"community": {"spatial": SPATIAL}}))
    s = store.get("coffee/warp.png")
    decision = engine.verify(_prediction(s.id, s.uri, "astronaut"))
    assert decision.label == "coffee" and decision.changed
    with pytest.raises(consist.ConsistError, match="unknown community option"):
        consist.Engine(["community"], store=store, config=consist.EngineConfig(checker_options={"community": {"hops": 2}}))


def test_a_larger_k_verifies_more_neighbours_and_a_smaller_one_reuses(dataset: Path, tmp_path: Path) -> None:
    store = consist.open_store(f"sqlite:///{tmp_path / 'k.db'}")
    store.put([Sample(id=it.id, uri=it.uri, label=it.label, provenance="import") for it in read_dataset(dataset)], reason="test")
    retr = AsmkRetriever(extractor=EXTRACTOR)
    small = MatchingHypergraph(GraphConfig(k=2, spatial=SPATIAL))
    small.build(store, retriever=retr)
    assert max(len(t) for t in small.tried.values()) == 2
    assert MatchingHypergraph(GraphConfig(k=2, spatial=SPATIAL)).build(store, retriever=retr).verified_pairs == 0
    larger = MatchingHypergraph(GraphConfig(k=5, spatial=SPATIAL))
    report = larger.build(store, retriever=retr)
    assert report.added == 12 and report.verified_pairs > 0
    assert max(len(t) for t in larger.tried.values()) > 2
    assert larger.n_edges >= small.n_edges
    assert MatchingHypergraph(GraphConfig(k=2, spatial=SPATIAL)).build(store, retriever=retr).verified_pairs == 0, "saved with a larger k: reused"
    store.close()


def test_a_graph_verified_by_topological_ransac(built: tuple[consist.Store, MatchingHypergraph]) -> None:
    store, homography = built
    tr = MatchingHypergraph(GraphConfig(k=200, spatial=SPATIAL, verifier="tr"))
    tr.build(store, retriever=AsmkRetriever(extractor=EXTRACTOR))
    assert store.get_artefact("cat/full.png", edges_kind(EXTRACTOR.kind, "tr")) is not None
    assert edges_kind(EXTRACTOR.kind, "tr") != edges_kind(EXTRACTOR.kind)
    for a, b in tr.g.edges:
        assert label(a) == label(b)
    assert nx_components(tr) == 3 and tr.stats()["verifier"] == "tr"
    assert tr.n_edges >= homography.n_edges - 2


def nx_components(graph: MatchingHypergraph) -> int:
    import networkx as nx

    return nx.number_connected_components(graph.g)


def test_spatial_options_of_the_commands_are_checked() -> None:
    import click

    from consist_topological.cli import _spatial_options

    assert _spatial_options(("model=fundamental", "min_inliers=12")) == {"model": "fundamental", "min_inliers": 12}
    with pytest.raises(click.BadParameter, match="unknown spatial option"):
        _spatial_options(("inliers=3",))
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        _spatial_options(("model",))
