"""ASMK instance retrieval over cached local features, on real photos that
scikit-image ships: several views (crops, perspective warps, lighting, the real
second view of the stereo motorcycle) of five objects in class sub-folders.

Everything runs at ``max_side=512`` with at most 600 keypoints, to keep the suite
fast on two cores.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")

import consist  # noqa: E402
from consist.datasets import read_dataset  # noqa: E402
from consist.errors import ConsistError  # noqa: E402
from consist.images import encode_png, load_image  # noqa: E402
from consist.metrics.retrieval import evaluate_query  # noqa: E402
from consist.records import Query, Region, Sample  # noqa: E402
from consist_spatial import AsmkIndex, AsmkParams, AsmkRetriever, SiftExtractor, features_for, spatial_rerank, update_asmk_index  # noqa: E402
from consist_spatial.asmk import (  # noqa: E402
    ASMK_SAMPLE_ID,
    codebook_kind,
    default_codebook_size,
    detect_extractor,
    ivf_kind,
    open_asmk_index,
    query_features,
    spatial_config_for,
)

EXTRACTOR = SiftExtractor(max_side=512, max_keypoints=600)
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _shrink(img: np.ndarray, side: int = 420) -> np.ndarray:
    h, w = img.shape[:2]
    s = side / max(h, w)
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else img


def _warp(img: np.ndarray, tl: float, tr: float) -> np.ndarray:
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[w * tl, h * 0.05], [w * (1 - tr), 0], [w, h], [0, h * 0.95]])
    return cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (w, h))


def _rotate(img: np.ndarray, deg: float, scale: float = 1.0) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), deg, scale), (w, h))


def object_photos() -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """label -> (photo, a real second view or None)."""
    left, right, _ = skimage_data.stereo_motorcycle()
    return {
        "astronaut": (skimage_data.astronaut(), None),
        "cat": (skimage_data.chelsea(), None),
        "coffee": (skimage_data.coffee(), None),
        "rocket": (skimage_data.rocket(), None),
        "motorcycle": (left, right),
    }


def write_views(root: Path, labels: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Four reference views per object as ROOT/<label>/<view>.png; returns held-out
    query views (label -> pixels): a new warp with other lighting, or the real
    second view of the motorcycle."""
    queries = {}
    for label, (photo, second) in object_photos().items():
        if labels is not None and label not in labels:
            continue
        img = _shrink(photo)
        h, w = img.shape[:2]
        views = {
            "full": img,
            "crop": img[int(0.08 * h) : int(0.85 * h), int(0.12 * w) : int(0.92 * w)],
            "warp": _warp(img, 0.12, 0.02),
            "dim": np.clip(_rotate(img, 12, 0.9).astype(np.float32) * 0.65, 0, 255).astype(np.uint8),
        }
        (root / label).mkdir(parents=True, exist_ok=True)
        for name, view in views.items():
            (root / label / f"{name}.png").write_bytes(encode_png(np.ascontiguousarray(view)))
        held = _shrink(second) if second is not None else np.clip(_warp(_rotate(img, -8, 0.85), 0.02, 0.15).astype(np.float32) * 1.25, 0, 255).astype(np.uint8)
        queries[label] = np.ascontiguousarray(held)
    return queries


def put_dataset(store: consist.Store, root: Path) -> list[Sample]:
    samples = [Sample(id=it.id, uri=it.uri, label=it.label, provenance="import") for it in read_dataset(root)]
    store.put(samples, reason="test")
    return samples


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("asmk") / "views"
    return root, write_views(root)


@pytest.fixture(scope="module")
def indexed(dataset: tuple[Path, dict[str, np.ndarray]], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, AsmkIndex]:
    root, _ = dataset
    uri = f"sqlite:///{tmp_path_factory.mktemp('asmk-store') / 'store.db'}"
    store = consist.open_store(uri)
    put_dataset(store, root)
    index = AsmkIndex.train(store, EXTRACTOR)
    store.close()
    return uri, index


def leave_one_out(store: consist.Store, index: AsmkIndex) -> tuple[float, int, int]:
    samples = list(store.samples())
    pos = {s.id: i for i, s in enumerate(samples)}
    aps, top1 = [], 0
    for s in samples:
        feats = features_for(s, store, index.extractor)
        hits = index.search(feats.descriptors, None, exclude={s.id})
        assert s.id not in {h for h, _ in hits}
        ranking = [pos[h] for h, _ in hits]
        positives = [pos[o.id] for o in samples if o.label == s.label and o.id != s.id]
        aps.append(evaluate_query(ranking, positives).ap)
        top1 += samples[ranking[0]].label == s.label
    return float(np.mean(aps)), top1, len(samples)


def test_leave_one_out_ranks_views_of_the_same_object_first(indexed: tuple[str, AsmkIndex]) -> None:
    uri, index = indexed
    store = consist.open_store(uri, create=False)
    mean_ap, top1, n = leave_one_out(store, index)
    assert n == 20 and len(index) == 20
    assert top1 == n, "every view's nearest other view shows the same object"
    assert mean_ap >= 0.9, mean_ap
    stats = index.stats()
    assert stats["words"] == default_codebook_size(stats["trained_on_descriptors"]) and stats["trained_on_images"] == 20
    assert stats["source"] == "trained" and stats["binary"] is True


def test_default_codebook_size() -> None:
    assert default_codebook_size(10_000) == 200
    assert default_codebook_size(10_000_000) == 1024
    assert default_codebook_size(100) == 16
    assert default_codebook_size(5) == 5
    assert default_codebook_size(10_000_000, cap=4096) == 4096


def test_index_persists_in_the_store_and_reloads_identically(indexed: tuple[str, AsmkIndex], dataset: tuple[Path, dict[str, np.ndarray]]) -> None:
    uri, index = indexed
    store = consist.open_store(uri, create=False)
    kinds = store.artefact_kinds()
    assert kinds[codebook_kind(EXTRACTOR)] == 1 and kinds[ivf_kind(EXTRACTOR)] == 1
    assert codebook_kind(EXTRACTOR) == "asmk/codebook/sift-rootsift-512-600"
    assert store.get(ASMK_SAMPLE_ID) is None  # artefacts only, no fake sample
    assert detect_extractor(store) == EXTRACTOR  # queries find the index's extractor
    again = AsmkIndex.load(store)
    assert again is not None and again.digest == index.digest and again.ids == index.ids
    assert again.last_seq == index.last_seq and again.codebook_meta["trained_on_images"] == 20
    query = features_for(Query(id="q", image=dataset[1]["cat"]), None, EXTRACTOR)
    np.testing.assert_allclose(again.scores(query.descriptors), index.scores(query.descriptors))
    assert again.sync(store).changed is False  # nothing happened since the snapshot


def test_retriever_is_registered_and_finds_the_object(indexed: tuple[str, AsmkIndex], dataset: tuple[Path, dict[str, np.ndarray]]) -> None:
    uri, _ = indexed
    retriever = consist.plugins.retrievers()["asmk"]
    assert isinstance(retriever, AsmkRetriever)
    store = consist.open_store(uri, create=False)
    for label, pixels in dataset[1].items():
        neighbours = retriever.retrieve(Query(id=f"q-{label}", image=pixels), store, 6)
        assert [n.rank for n in neighbours] == list(range(len(neighbours))) and len(neighbours) == 6
        assert all(n.source == "asmk" for n in neighbours)
        sims = [n.similarity for n in neighbours]
        assert sims == sorted(sims, reverse=True) and sims[0] > 0
        assert neighbours[0].sample.label == label, (label, [(n.sample.id, round(n.similarity, 3)) for n in neighbours])


def test_engine_can_use_the_asmk_retriever(indexed: tuple[str, AsmkIndex], dataset: tuple[Path, dict[str, np.ndarray]]) -> None:
    uri, _ = indexed
    store = consist.open_store(uri, create=False)
    engine = consist.Engine(store=store, retriever="asmk", checkers=[], config=consist.EngineConfig(adapt=False))
    prediction = consist.Prediction(query=Query(id="q", image=dataset[1]["coffee"]), candidates=(consist.Candidate("coffee", 0.6),))
    assert engine.neighbours(prediction, 3)[0].sample.label == "coffee"


def test_region_restricts_the_query(indexed: tuple[str, AsmkIndex], dataset: tuple[Path, dict[str, np.ndarray]]) -> None:
    uri, _ = indexed
    store = consist.open_store(uri, create=False)
    pixels = dataset[1]["rocket"]
    h, w = pixels.shape[:2]
    whole = AsmkRetriever(extractor=EXTRACTOR).retrieve(Query(id="q", image=pixels), store, 4)
    part = AsmkRetriever(extractor=EXTRACTOR).retrieve(Query(id="q", image=pixels, region=Region.from_box(0, 0, w / 2, h)), store, 4)
    assert part[0].sample.label == "rocket" and whole[0].sample.label == "rocket"
    assert part[0].similarity != whole[0].similarity
    all_feats = query_features(Query(id="q", image=pixels), None, EXTRACTOR)
    feats = query_features(Query(id="q", image=pixels, region=Region.from_box(0, 0, w / 2, h)), None, EXTRACTOR)
    assert 0 < len(feats) < len(all_feats) and feats.keypoints[:, 0].max() <= w / 2


def test_spatial_rerank_verifies_and_localises(indexed: tuple[str, AsmkIndex], dataset: tuple[Path, dict[str, np.ndarray]]) -> None:
    uri, _index = indexed
    store = consist.open_store(uri, create=False)
    query = Query(id="q", image=dataset[1]["astronaut"])
    neighbours = AsmkRetriever(extractor=EXTRACTOR).retrieve(query, store, 10)
    ranked = spatial_rerank(query, neighbours, store, depth=8, config=spatial_config_for(EXTRACTOR, min_inliers=12))
    assert [r.neighbour.rank for r in ranked] == list(range(10))
    assert {r.neighbour.sample.id for r in ranked} == {n.sample.id for n in neighbours}
    verified = [r for r in ranked if r.verified]
    assert verified and ranked[: len(verified)] == verified  # verified first
    assert {r.neighbour.sample.label for r in verified} == {"astronaut"}
    assert [r.inliers for r in verified] == sorted((r.inliers for r in verified), reverse=True)
    best = ranked[0]
    assert best.inliers >= 30 and best.polygon is not None and len(best.polygon) >= 3
    assert best.polygon_source == "projected_query_region"
    assert best.inlier_points.shape[1] == 4 and len(best.inlier_points) >= best.inliers
    d = best.to_dict()
    assert d["verified"] is True and d["label"] == "astronaut" and d["rank"] == 0 and isinstance(d["polygon"][0][0], float)
    assert all(r.verification is None for r in ranked[8:])  # beyond the depth: not checked


@pytest.fixture
def small_store(tmp_path: Path) -> tuple[consist.Store, dict[str, np.ndarray], Path]:
    root = tmp_path / "small"
    queries = write_views(root, ("cat", "coffee", "rocket"))
    store = consist.open_store(f"sqlite:///{tmp_path / 'small.db'}")
    put_dataset(store, root)
    return store, queries, root


def test_adding_a_sample_makes_it_retrievable_without_retraining(small_store: tuple[consist.Store, dict[str, np.ndarray], Path]) -> None:
    store, queries, root = small_store
    retriever = AsmkRetriever(extractor=EXTRACTOR)
    before = retriever.index_for(store)  # trained on first use, saved
    codebook = store.get_artefact(ASMK_SAMPLE_ID, codebook_kind(EXTRACTOR))
    assert codebook is not None and len(before) == 12
    new = root / "cat" / "new.png"
    new.write_bytes(encode_png(queries["cat"]))
    store.put([Sample(id="cat/new.png", uri=str(new), label="cat")])
    hits = retriever.retrieve(Query(id="again", image=load_image(str(new))), store, 3)
    assert hits[0].sample.id == "cat/new.png" and hits[0].sample.label == "cat"
    index = retriever.index_for(store)
    assert index is before and len(index) == 13 and "cat/new.png" in index
    assert store.get_artefact(ASMK_SAMPLE_ID, codebook_kind(EXTRACTOR)) == codebook  # no retraining
    # the snapshot was saved: another process loads it without re-indexing anything
    uri = store.uri
    store.close()
    reopened = consist.open_store(uri, create=False)
    loaded = AsmkIndex.load(reopened, EXTRACTOR)
    assert loaded is not None and "cat/new.png" in loaded and loaded.digest == index.digest
    assert loaded.sync(reopened).changed is False
    # a sample added by another process after the snapshot: caught up from the history
    other = root / "rocket" / "new.png"
    other.write_bytes(encode_png(queries["rocket"]))
    reopened.put([Sample(id="rocket/new.png", uri=str(other), label="rocket")])
    reopened.close()
    third = consist.open_store(uri, create=False)
    hits = AsmkRetriever(extractor=EXTRACTOR).retrieve(Query(id="q3", image=load_image(str(other))), third, 2)
    assert hits[0].sample.id == "rocket/new.png"


def test_deleted_and_changed_samples_follow_the_store(small_store: tuple[consist.Store, dict[str, np.ndarray], Path]) -> None:
    store, _queries, root = small_store
    retriever = AsmkRetriever(extractor=EXTRACTOR)
    pixels = load_image(str(root / "coffee" / "full.png"))
    assert retriever.retrieve(Query(id="q", image=pixels), store, 1)[0].sample.id == "coffee/full.png"
    store.delete("coffee/full.png")
    hits = retriever.retrieve(Query(id="q", image=pixels), store, 12)
    assert "coffee/full.png" not in {n.sample.id for n in hits} and hits[0].sample.label == "coffee"
    # new pixels under an existing id: re-indexed from the new image
    store.put([Sample(id="cat/full.png", uri=str(root / "rocket" / "full.png"), label="cat")])
    hits = retriever.retrieve(Query(id="q2", image=load_image(str(root / "rocket" / "full.png"))), store, 2)
    assert {n.sample.id for n in hits} == {"rocket/full.png", "cat/full.png"}
    stats = retriever.index_for(store).stats()
    assert stats["images"] == 11 and stats["stale_entries"] == 2


def test_update_retrains_when_the_store_grew(small_store: tuple[consist.Store, dict[str, np.ndarray], Path], tmp_path: Path) -> None:
    store, _, _ = small_store
    all_samples = list(store.samples())
    params = AsmkParams(retrain_growth=2.0)
    index = AsmkIndex.train(store, EXTRACTOR, params, samples=all_samples[:4])
    assert index.codebook_meta["trained_on_images"] == 4 and len(index) == 4
    index, report = update_asmk_index(store, EXTRACTOR, params)
    assert report["action"] == "retrained" and "from 4 to 12 images" in report["reason"]
    assert index.codebook_meta["trained_on_images"] == 12 and len(index) == 12
    index, report = update_asmk_index(store, EXTRACTOR, params)
    assert report["action"] == "unchanged" and report["added"] == 0
    # a codebook from a file (.npy): used as it is, never retrained automatically
    path = tmp_path / "words.npy"
    np.save(path, index.codebook.centroids[:32])
    index, report = update_asmk_index(store, EXTRACTOR, params, codebook=path)
    assert report["action"] == "loaded" and report["words"] == 32 and report["source"] == f"file:{path}"
    assert not index.needs_retrain()
    assert open_asmk_index(store, EXTRACTOR, params).size == 32
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((8, 64), np.float32))
    with pytest.raises(ConsistError, match="64-d"):
        update_asmk_index(store, EXTRACTOR, params, codebook=bad)


def test_codebook_training_is_reproducible(small_store: tuple[consist.Store, dict[str, np.ndarray], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampling (AsmkParams.seed) and the k-means (KMEANS_SEED) are seeded: two runs give
    the same codebook; the k-means seed is the one in effect."""
    from consist_spatial.asmk import codebook

    store, _, _ = small_store
    for s in store.samples():
        # cached first: the extracting call returns unquantised descriptors, later reads the cached ones
        features_for(s, store, EXTRACTOR)
    params = AsmkParams(codebook_size=24, train_descriptors=3000)  # sampled: fewer than the store has
    first = AsmkIndex.train(store, EXTRACTOR, params, save=False)
    second = AsmkIndex.train(store, EXTRACTOR, params, save=False)
    assert first.codebook_meta["trained_on_descriptors"] < first.codebook_meta["descriptors_seen"]
    assert np.array_equal(first.codebook.centroids, second.codebook.centroids) and first.digest == second.digest
    monkeypatch.setattr(codebook, "KMEANS_SEED", codebook.KMEANS_SEED + 1)
    assert AsmkIndex.train(store, EXTRACTOR, params, save=False).digest != first.digest


def test_codebook_and_ranking_do_not_depend_on_the_order_samples_were_stored(small_store: tuple[consist.Store, dict[str, np.ndarray], Path], tmp_path: Path) -> None:
    """An audit's workers store images in the order they finish: the same images stored
    in reverse order give the same codebook and the same neighbours."""
    store, queries, _root = small_store
    reverse = consist.open_store(f"sqlite:///{tmp_path / 'reverse.db'}")
    samples = list(store.samples())
    reverse.put(list(reversed(samples)), reason="test")
    for st in (store, reverse):
        for s in samples:
            features_for(s, st, EXTRACTOR)  # cached (quantised) features in both
    params = AsmkParams(codebook_size=24, train_descriptors=3000)
    a = AsmkIndex.train(store, EXTRACTOR, params, save=False)
    b = AsmkIndex.train(reverse, EXTRACTOR, params, save=False)
    assert [s.id for s in reverse.samples()] == [s.id for s in reversed(samples)]
    assert np.array_equal(a.codebook.centroids, b.codebook.centroids)
    for label, pixels in queries.items():
        q = Query(id=f"q-{label}", image=pixels)
        assert [n.sample.id for n in a.retrieve(q, store, 6)] == [n.sample.id for n in b.retrieve(q, reverse, 6)]
    reverse.close()


def test_open_without_build_explains_how_to_index(tmp_path: Path) -> None:
    store = consist.open_store(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(ConsistError, match="no ASMK index; build it with: consist index"):
        open_asmk_index(store, EXTRACTOR, build=False)
    assert AsmkRetriever().retrieve(Query(id="q", image=np.zeros((8, 8, 3), np.uint8)), store, 5) == []
    assert detect_extractor(store) is None
    store.put_artefact("a", EXTRACTOR.kind, b"cached features")  # a store indexed with --no-asmk
    assert detect_extractor(store) == EXTRACTOR


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "ukbench-subset" / "labels.csv").exists(), reason="../shared/data/ukbench-subset not present")
def test_ukbench_subset_leave_one_out(tmp_path: Path) -> None:
    """14 objects x 4 views (real photos): ASMK alone puts the same object's views first."""
    import csv

    root = SHARED / "ukbench-subset"
    store = consist.open_store(f"sqlite:///{tmp_path / 'uk.db'}")
    rows = list(csv.DictReader((root / "labels.csv").open()))
    store.put([Sample(id=r["file"], uri=str(root / r["file"]), label=f"object{r['object_id']}") for r in rows])
    index = AsmkIndex.train(store, SiftExtractor(max_side=512, max_keypoints=1000))
    mean_ap, top1, n = leave_one_out(store, index)
    assert n == 56
    assert mean_ap >= 0.9 and top1 >= 52, (mean_ap, top1)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("multiple_assignment", [1, 5])
def test_vectorised_aggregation_equals_the_asmk_package(binary: bool, multiple_assignment: int) -> None:
    from asmk import codebook as cdb_pkg
    from asmk import index as idx_pkg
    from asmk import kernel as kern_pkg

    from consist_spatial.asmk.aggregate import aggregate_residuals

    rng = np.random.default_rng(3)
    centroids = rng.normal(size=(64, 32)).astype(np.float32)
    des = (centroids[rng.integers(0, 64, 700)] + 0.3 * rng.normal(size=(700, 32))).astype(np.float32)
    cb = cdb_pkg.Codebook(idx_pkg.initialize_index(gpu_id=None), size=64)
    cb.index(centroids)
    kernel = kern_pkg.ASMKKernel(cb, binary=binary)
    _d, words = cb.quantize(des, multiple_assignment=multiple_assignment)
    ref_vecs, ref_ids = kernel.aggregate_image(des, words)
    vecs, ids = aggregate_residuals(des, words, cb.centroids, binary=binary)
    np.testing.assert_array_equal(ids, ref_ids)
    if binary:  # sign bits of float32 sums in another order: equal but for values at ~0
        assert vecs.dtype == ref_vecs.dtype and vecs.shape == ref_vecs.shape
        assert np.mean(np.unpackbits(vecs.view(np.uint8)) == np.unpackbits(ref_vecs.view(np.uint8))) > 0.999
    else:
        np.testing.assert_allclose(vecs, ref_vecs, atol=1e-5)
