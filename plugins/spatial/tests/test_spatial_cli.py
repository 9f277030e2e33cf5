"""``consist index`` and ``consist query``, run as users run them: a real process,
real exit codes, on views of real photos that scikit-image ships (see
test_spatial_asmk.py), with a corrupt and an empty image file among them."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage.data")

from consist.images import encode_png, load_image

SMALL = ("--max-side", "512", "--max-keypoints", "600")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("CONSIST_STORE", None)
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _write_views(root: Path) -> dict[str, np.ndarray]:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_spatial_asmk import write_views
    finally:
        sys.path.pop(0)
    return write_views(root)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The dataset (20 good views, 2 bad files), indexed once; both runs' results."""
    tmp = tmp_path_factory.mktemp("cli")
    root = tmp / "photos"
    queries = _write_views(root)
    (root / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg at all" * 20)
    (root / "rocket" / "empty.png").write_bytes(b"")
    (root / "README.txt").write_text("not an image")
    qfiles = {}
    for label, pixels in queries.items():
        qfiles[label] = tmp / f"query-{label}.png"
        qfiles[label].write_bytes(encode_png(pixels))
    store = f"sqlite:///{tmp / 'store.db'}"
    first = run("index", str(root), "--store", store, *SMALL, "--json")
    import consist

    with consist.open_store(store, create=False) as s:  # a person removes one view
        s.delete("astronaut/dim.png", reason="blurry")
    second = run("index", str(root), "--store", store, *SMALL, "--json")
    return {"root": root, "store": store, "first": first, "second": second, "queries": qfiles, "tmp": tmp}


def test_index_reports_bad_images_by_name_and_goes_on(indexed: dict) -> None:
    r = indexed["first"]
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["indexed"] == 20 and out["updated"] == 0 and out["unchanged"] == 0
    assert out["dataset"]["items"] == 22 and out["dataset"]["labels"] == 5 and out["dataset"]["layout"] == "folders"
    failed = {f["id"]: f["error"] for f in out["failed"]}
    assert set(failed) == {"cat/corrupt.jpg", "rocket/empty.png"}
    assert failed["rocket/empty.png"].endswith("empty.png: empty file (0 bytes)")
    assert "corrupt.jpg: not an image" in failed["cat/corrupt.jpg"]
    for name in ("cat/corrupt.jpg", "rocket/empty.png"):  # one warning line each, naming the file
        lines = [ln for ln in r.stderr.splitlines() if name in ln]
        assert len(lines) == 1 and lines[0].startswith("warning: "), r.stderr
    assert out["extractor"] == "features/sift-rootsift-512-600" and out["embedder"] == "tiny"
    asmk = out["asmk"]
    assert asmk["action"] == "trained" and asmk["images"] == 20 and asmk["trained_on_images"] == 20


def test_index_is_resumable(indexed: dict) -> None:
    r = indexed["second"]
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["indexed"] == 0 and out["unchanged"] == 19 and len(out["failed"]) == 2
    assert out["kept_deleted"] == 1  # the deleted view is not brought back
    assert out["asmk"]["action"] == "updated" and out["asmk"]["images"] == 19 and out["asmk"]["added"] == 0


def test_store_holds_samples_features_embeddings_and_the_index(indexed: dict) -> None:
    import consist

    store = consist.open_store(indexed["store"], create=False)
    assert len(store) == 19 and store.labels() == {"astronaut": 3, **{label: 4 for label in ("cat", "coffee", "motorcycle", "rocket")}}
    s = store.get("cat/warp.png")
    assert s is not None and s.label == "cat" and s.provenance.value == "import" and s.embedding is not None
    assert s.uri == str((indexed["root"] / "cat" / "warp.png").resolve())
    kinds = store.artefact_kinds()
    assert kinds["features/sift-rootsift-512-600"] == 20
    assert kinds["asmk/codebook/sift-rootsift-512-600"] == 1 and kinds["asmk/ivf/sift-rootsift-512-600"] == 1
    assert {e.action for e in store.history(limit=None)} == {"add", "delete"}


def test_query_json_finds_verifies_and_localises(indexed: dict) -> None:
    tmp: Path = indexed["tmp"]
    overlay = tmp / "overlay.png"
    r = run("query", str(indexed["queries"]["motorcycle"]), "--store", indexed["store"], "--top", "4", "--json", "--overlay", str(overlay))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["retriever"] == "asmk" and out["rerank"] == "spatial" and out["overlay"] == str(overlay)
    results = out["results"]
    assert len(results) == 4 and [x["rank"] for x in results] == [0, 1, 2, 3]
    top = results[0]
    assert top["label"] == "motorcycle" and top["verified"] is True and top["inliers"] >= 30
    assert top["id"].startswith("motorcycle/") and top["score"] > 0
    poly = np.asarray(top["polygon"])
    assert poly.ndim == 2 and poly.shape[1] == 2 and len(poly) >= 3 and top["polygon_source"] == "projected_query_region"
    w, h = load_image(top["uri"]).shape[1::-1]
    assert np.all(poly >= -1) and np.all(poly[:, 0] <= w) and np.all(poly[:, 1] <= h)  # the result's pixels
    # the overlay: a real PNG, one row per result, query and result side by side
    data = overlay.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert 700 <= width <= 1200 and 4 * 250 <= height <= 4 * 400
    img = load_image(str(overlay))
    assert img.shape == (height, width, 3) and img.std() > 20  # not a blank canvas


def test_query_with_a_region_and_human_output(indexed: dict) -> None:
    query = indexed["queries"]["cat"]
    h, w = load_image(str(query)).shape[:2]
    r = run("query", str(query), "--store", indexed["store"], "--region", f"{w * 0.2:.0f},{h * 0.1:.0f},{w * 0.8:.0f},{h * 0.9:.0f}", "--top", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "asmk + spatial re-ranking" in lines[0]
    assert lines[1].split()[:2] == ["1.", "cat"] and "verified" in lines[1] and "localised" in lines[1]


def test_query_with_the_vector_retriever_and_no_rerank(indexed: dict) -> None:
    r = run("query", str(indexed["queries"]["coffee"]), "--store", indexed["store"], "--retriever", "vector", "--rerank", "none", "--top", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["results"]) == 3 and all(x["verified"] is False and x["matches"] is None for x in out["results"])


def test_bad_invocations_exit_2_with_one_line(tmp_path: Path, indexed: dict) -> None:
    r = run("index", str(tmp_path / "nowhere"), "--store", str(tmp_path / "s.db"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: no such folder"]
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    r = run("index", str(tmp_path / "empty"), "--store", str(tmp_path / "s.db"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "no images found" in r.stderr
    r = run("query", str(indexed["queries"]["cat"]), "--store", str(tmp_path / "missing.db"))
    assert r.returncode == 2 and "no such store" in r.stderr
    r = run("query", str(tmp_path / "nope.png"), "--store", indexed["store"])
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'nope.png'}: no such file"
