"""``consist topology build``, ``consist eval retrieval`` (leave-one-out and
revisitop ground truth) and ``consist query --rerank hp``, run as a user runs them."""

from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import rotate, shrink, skimage_data, warp

from consist.images import encode_png, load_image

SMALL = ("--max-side", "512", "--max-keypoints", "600")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("CONSIST_STORE", None)
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def indexed(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    store = f"sqlite:///{tmp_path_factory.mktemp('topo-cli') / 'store.db'}"
    r = run("index", str(dataset), "--store", store, *SMALL, "--json")
    assert r.returncode == 0, r.stderr
    return store


def test_topology_build_then_eval_retrieval_leave_one_out(dataset: Path, indexed: str) -> None:
    r = run("topology", "build", "--store", indexed, "--json")
    assert r.returncode == 0, r.stderr
    built = json.loads(r.stdout)
    assert built["nodes"] == 12 and built["edges"] >= 12 and built["components"] == 3 and built["computed"] == 12
    r = run("eval", "retrieval", str(dataset), "--store", indexed, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["kind"] == "leave-one-out" and out["queries"] == 12
    assert list(out["results"]) == ["asmk", "spatial", "hp", "cs"]
    for m, res in out["results"].items():
        assert res["queries"] == 12 and 0.0 <= res["map"] <= 1.0, m
    assert out["results"]["hp"]["map"] == pytest.approx(1.0), "every view is connected to its object's other views"
    assert out["graph"]["nodes"] == 12
    assert out["timings"]["graph_build_s"] < 30, "the graph was built already: loaded, not recomputed"
    text = run("eval", "retrieval", str(dataset), "--store", indexed, "--methods", "asmk,hp")
    assert text.returncode == 0 and "hp" in text.stdout and "mAP" in text.stdout and "cs" not in text.stdout.split("mAP")[1]
    bad = run("eval", "retrieval", str(dataset), "--store", indexed, "--methods", "asmk,magic")
    assert bad.returncode == 2 and "magic" in bad.stderr


@pytest.fixture(scope="module")
def revisitop(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A flat image folder with a revisitop-style gnd: the 12 views as database,
    two held-out views as queries (boxes around the object), easy/hard/junk lists."""
    tmp = tmp_path_factory.mktemp("gnd")
    imgs = tmp / "jpg"
    imgs.mkdir()
    imlist = []
    for p in sorted(dataset.glob("*/*.png")):
        name = f"{p.parent.name}_{p.stem}"
        (imgs / f"{name}.png").write_bytes(p.read_bytes())
        imlist.append(name)
    held = {
        "astronaut": np.clip(warp(rotate(shrink(skimage_data.astronaut()), -8, 0.85), 0.02, 0.15).astype(np.float32) * 1.2, 0, 255).astype(np.uint8),
        "coffee": np.clip(rotate(shrink(skimage_data.coffee()), 10, 0.9).astype(np.float32) * 1.1, 0, 255).astype(np.uint8),
    }
    gnd = []
    for label, pixels in held.items():
        (imgs / f"q_{label}.png").write_bytes(encode_png(pixels))
        mine = [i for i, n in enumerate(imlist) if n.startswith(label)]
        h, w = pixels.shape[:2]
        gnd.append({"bbx": [5.0, 5.0, w - 5.0, h - 5.0], "easy": mine[:2], "hard": mine[2:3], "junk": mine[3:]})
    path = tmp / "gnd_test.pkl"
    path.write_bytes(pickle.dumps({"imlist": imlist, "qimlist": [f"q_{k}" for k in held], "gnd": gnd}))
    return imgs, path


def test_eval_retrieval_with_revisitop_ground_truth(revisitop: tuple[Path, Path], tmp_path: Path) -> None:
    imgs, gnd = revisitop
    store = f"sqlite:///{tmp_path / 'gnd.db'}"
    r = run("eval", "retrieval", str(imgs), "--gnd", str(gnd), "--store", store, "--k", "8", "--depth", "8", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["kind"] == "revisitop" and out["queries"] == 2 and out["database"] == 12
    for m in ("asmk", "spatial", "hp", "cs"):
        assert set(out["results"][m]) == {"easy", "medium", "hard"}
        for p in ("easy", "medium", "hard"):
            assert 0.0 <= out["results"][m][p]["map"] <= 1.0
    assert out["results"]["hp"]["medium"]["map"] >= 0.9


def test_eval_retrieval_rejects_bad_ground_truth(revisitop: tuple[Path, Path], tmp_path: Path) -> None:
    imgs, _ = revisitop
    evil = tmp_path / "gnd_evil.pkl"
    evil.write_bytes(pickle.dumps(collections.OrderedDict(gnd=[], imlist=[], qimlist=[])))
    r = run("eval", "retrieval", str(imgs), "--gnd", str(evil), "--store", f"sqlite:///{tmp_path / 'x.db'}")
    assert r.returncode == 2 and str(evil) in r.stderr and "refusing" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    from consist.errors import ConsistError
    from consist.stores.sqlite import SQLiteStore
    from consist_topological.evaluation import evaluate_gnd, load_gnd

    missing = {"imlist": ["nope"], "qimlist": [], "gnd": []}
    with pytest.raises(ConsistError, match="missing.*nope"):
        evaluate_gnd(SQLiteStore(tmp_path / "y.db"), missing, imgs)
    wrong = tmp_path / "gnd_wrong.pkl"
    wrong.write_bytes(pickle.dumps({"imlist": ["a"], "qimlist": ["b"], "gnd": [{"easy": [3], "hard": []}]}))
    with pytest.raises(ConsistError, match="outside"):
        load_gnd(wrong)
    with pytest.raises(ConsistError, match="no such file"):
        load_gnd(tmp_path / "absent.pkl")


def test_query_rerank_hp_reports_community_uncertainty(indexed: str, tmp_path: Path) -> None:
    q = tmp_path / "q.png"
    q.write_bytes(encode_png(np.clip(warp(rotate(shrink(skimage_data.chelsea()), 8, 0.9), 0.05, 0.1).astype(np.float32) * 1.1, 0, 255).astype(np.uint8)))
    r = run("query", str(q), "--store", indexed, "--rerank", "hp", "--top", "5", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rerank"] == "hp" and 0.0 <= out["community_uncertainty"] <= np.log(20)
    top = out["results"][:3]
    assert all(x["label"] == "cat" for x in top), [x["id"] for x in out["results"]]
    assert all(x["hop"] is not None and x["active_region"] is not None for x in top)
    text = run("query", str(q), "--store", indexed, "--rerank", "hp")
    assert text.returncode == 0 and "community uncertainty" in text.stdout
    assert load_image(str(q)).shape[2] == 3
