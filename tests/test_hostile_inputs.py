"""Hostile inputs (issue 12): symbolic-link loops, 16-bit and float images, paths
outside the dataset, changed pixels under --resume, unbounded reads. Real files in
tmp_path, the real command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from consist.datasets import read_dataset

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONSIST_PLUGINS": os.environ.get("CONSIST_PLUGINS", "spatial")}
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=env, timeout=timeout)


def _photo(path: Path, seed: int, side: int = 96) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------ 1. symlink loops


def test_symlink_loop_is_reported_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(3):
        _photo(root / "a" / f"a{i}.png", i)
        _photo(root / "b" / f"b{i}.png", 10 + i)
    os.symlink("..", root / "a" / "loop")  # photos/a/loop -> photos
    os.symlink("../b", root / "a" / "other")  # a second path to b's images
    ds = read_dataset(root)
    assert sorted(it.id for it in ds) == [f"a/a{i}.png" for i in range(3)] + [f"b/b{i}.png" for i in range(3)]
    assert {it.id: it.label for it in ds} == {**{f"a/a{i}.png": "a" for i in range(3)}, **{f"b/b{i}.png": "b" for i in range(3)}}
    loops = [p for p in ds.problems if p.kind == "symlink_loop"]
    assert sorted(p.path for p in loops) == ["a/loop", "a/other"]
    assert all("symbolic link" in p.message and "\n" not in p.message for p in loops)


def test_symlink_loop_audit_finishes(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(3):
        _photo(root / "a" / f"a{i}.png", i)
        _photo(root / "b" / f"b{i}.png", 10 + i)
    os.symlink("..", root / "a" / "loop")
    proc = _cli("audit", str(root), "--out", str(tmp_path / "out"), "--workers", "1", "--no-report", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "a/loop" in proc.stderr and "symbolic link" in proc.stderr
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["samples"] == 6


# ---------------------------------------------------- 2. 16-bit and float images


def _ramp16(path: Path) -> np.ndarray:
    from PIL import Image

    a = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    Image.fromarray(a).save(path)
    return a


def test_16bit_png_and_tiff_are_scaled_to_8_bits(tmp_path: Path) -> None:
    from consist.images import load_gray, load_image

    for name in ("deep.png", "deep.tif"):
        a = _ramp16(tmp_path / name)
        rgb = load_image(tmp_path / name)
        assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
        assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255  # not all white
        assert abs(int(rgb[0, 32, 0]) - int(a[0, 32]) // 257) <= 1
        gray, size = load_gray(tmp_path / name)
        assert size == (64, 48) and gray.min() == 0 and gray.max() == 255


def test_float_tiff_is_scaled_to_8_bits(tmp_path: Path) -> None:
    from PIL import Image

    from consist.images import load_gray, load_image

    f = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (48, 1))
    Image.fromarray(f).save(tmp_path / "float.tif")
    rgb = load_image(tmp_path / "float.tif")
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255 and 120 <= rgb[0, 32, 0] <= 135  # not all black
    g = np.tile(np.linspace(-5.0, 300.0, 64, dtype=np.float32), (48, 1))
    Image.fromarray(g).save(tmp_path / "wide.tif")
    gray, _ = load_gray(tmp_path / "wide.tif")
    assert gray.min() == 0 and gray.max() == 255


def test_16bit_images_audit_as_readable(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(2):
            (root / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 65535, (64, 64), dtype=np.uint16)).save(root / label / f"{i}.png")
    proc = _cli("audit", str(root), "--out", str(tmp_path / "out"), "--workers", "1", "--no-report")
    assert proc.returncode == 0, proc.stderr
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"].get("unreadable", 0) == 0


# ------------------------------------------------- 3. paths outside the dataset


def _outside_case(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "photos"
    for i in range(3):
        _photo(root / "cat" / f"c{i}.png", i)
        _photo(root / "dog" / f"d{i}.png", 10 + i)
    secret = _photo(tmp_path / "private" / "secret.png", 99)
    rows = ["path,label"] + [f"cat/c{i}.png,cat" for i in range(3)] + [f"dog/d{i}.png,dog" for i in range(3)]
    rows += ["../../../../../../../../etc/passwd,cat", "/etc/shadow,dog", "/proc/self/environ,dog", f"{secret},cat", "../private/secret.png,dog", "cat/../cat/c0.png,dog"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root, secret


def test_csv_rows_outside_the_dataset_are_refused_and_reported(tmp_path: Path) -> None:
    root, _ = _outside_case(tmp_path)
    ds = read_dataset(root, root / "labels.csv")
    assert sorted(it.id for it in ds) == ["cat/c0.png", "cat/c1.png", "cat/c2.png", "dog/d0.png", "dog/d1.png", "dog/d2.png"]
    outside = [p for p in ds.problems if p.kind == "outside_root"]
    assert len(outside) == 5 and all("outside the dataset folder" in p.message and "labels.csv" in p.message for p in outside)
    dup = [p for p in ds.problems if p.kind == "duplicate"]
    assert len(dup) == 1 and "cat/c0.png" in dup[0].message  # cat/../cat/c0.png is cat/c0.png: audited once
    opened = read_dataset(root, root / "labels.csv", allow_outside=True)
    assert any(it.uri.endswith("secret.png") for it in opened)


def test_audit_does_not_read_or_publish_outside_files(tmp_path: Path) -> None:
    root, _ = _outside_case(tmp_path)
    out = tmp_path / "out"
    proc = _cli("audit", str(root), "--labels", str(root / "labels.csv"), "--out", str(out), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "/etc/shadow: outside the dataset folder" in proc.stderr and "--allow-outside" in proc.stderr
    for name in ("audit.csv", "audit.jsonl"):
        text = (out / name).read_text(encoding="utf-8")
        assert "secret" not in text and "passwd" not in text and "shadow" not in text
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("secret.png") == html.count("secret.png: outside the dataset folder") == 2  # listed as refused, no card
    import json

    assert json.loads((out / "summary.json").read_text())["counts"]["samples"] == 6
    proc = _cli("audit", str(root), "--labels", str(root / "labels.csv"), "--out", str(tmp_path / "out2"), "--workers", "1", "--no-report", "--allow-outside")
    assert proc.returncode == 0, proc.stderr
    assert "secret.png" in (tmp_path / "out2" / "audit.csv").read_text(encoding="utf-8")


def test_links_inside_the_dataset_are_followed_rows_naming_outside_are_not(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(2):
        _photo(root / "cat" / f"c{i}.png", i)
    store = _photo(tmp_path / "annex" / "s.png", 5)  # a file store or git-annex object outside the folder
    os.symlink(store, root / "cat" / "link.png")
    os.symlink(store.parent, root / "dog")
    ds = read_dataset(root)
    assert [it.id for it in ds] == ["cat/c0.png", "cat/c1.png", "cat/link.png", "dog/s.png"]  # the owner's links
    (root / "labels.csv").write_text(f"path,label\ncat/link.png,cat\n../annex/s.png,dog\n{store},dog\n", encoding="utf-8")
    ds = read_dataset(root, root / "labels.csv")
    assert [it.id for it in ds] == ["cat/link.png"]
    assert len([p for p in ds.problems if p.kind == "outside_root"]) == 2


# ------------------------------------------ 4. --resume after pixels changed


def test_resume_reverifies_images_whose_file_changed(tmp_path: Path) -> None:
    import json
    import shutil

    from audit_data import build

    root, _ = build(tmp_path / "photos")
    out = tmp_path / "out"
    proc = _cli("audit", str(root), "--out", str(out), "--workers", "1", "--no-report")
    assert proc.returncode == 0, proc.stderr
    target = root / "cat" / "cat0.jpg"
    shutil.copyfile(root / "hubble" / "hub0.jpg", target)  # other pixels, same name and label
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 5_000_000_000))
    proc = _cli("audit", str(root), "--out", str(out), "--workers", "1", "--no-report", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "1 images changed" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["features"]["extracted"] == 1
    assert summary["verified_this_run"] >= 1
    rec = next(json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines() if json.loads(line)["sample"] == "cat/cat0.jpg")
    assert any(n["id"].startswith("hubble/") for n in rec["neighbours"][:2])  # verified with its new pixels


# ---------------------------------------------------------- 5. bounded reads


def test_devices_and_fifos_are_refused_unread(tmp_path: Path) -> None:
    from consist.errors import ImageError
    from consist.images import load_gray, load_image

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it would block forever: never opened
    for source in ("/dev/zero", str(fifo)):
        for load in (load_image, load_gray):
            with pytest.raises(ImageError, match="not a regular file"):
                load(source)


def test_huge_header_is_refused_before_the_pixels_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from consist import images
    from consist.errors import ImageError

    path = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(path)
    monkeypatch.setattr(images, "DEFAULT_MAX_BYTES", 10**9)
    with pytest.raises(ImageError, match=r"12 MP, over the 1 MP limit"):
        images.load_image(path, max_pixels=1_000_000)
    monkeypatch.setattr(images, "DEFAULT_MAX_BYTES", 100)
    with pytest.raises(ImageError, match=r"over the .* MiB limit"):
        images.load_image(path)


def test_query_of_dev_zero_exits_2_at_once(tmp_path: Path) -> None:
    from consist.stores.uri import open_store

    store = tmp_path / "s.db"
    open_store(f"sqlite:///{store}", create=True).close()
    proc = _cli("query", "/dev/zero", "--store", str(store), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "/dev/zero" in proc.stderr and "not a regular file" in proc.stderr


# ------------------------------------------- 19. consist correct's inputs


def test_correct_refuses_folders_non_images_and_infinite_boxes(tmp_path: Path) -> None:
    import json

    from consist.records import Region
    from consist.stores.uri import open_store

    store = f"sqlite:///{tmp_path / 's.db'}"
    open_store(store, create=True).close()
    img = _photo(tmp_path / "a.png", 1)
    (tmp_path / "notes.jpg").write_text("not an image")
    before = (tmp_path / "s.db").read_bytes()
    for args, what in (
        (("--image", str(tmp_path)), "is a folder"),
        (("--image", str(tmp_path / "notes.jpg")), "not an image"),
        (("--image", "/dev/zero"), "not a regular file"),
        (("--image", str(img), "--box", "0,0,1e309,10"), "not a finite number"),
        (("--image", str(img), "--box", "-1e309,0,10,10"), "not a finite number"),
        (("--image", str(img), "--box", "0,0,nan,10"), "not a finite number"),
    ):
        proc = _cli("correct", "s1", "cat", "--store", store, *args, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1 and what in proc.stderr, proc.stderr
    poly = tmp_path / "p.json"
    poly.write_text("[[0, 0], [1e309, 0], [5, 5]]")
    proc = _cli("correct", "s1", "cat", "--store", store, "--image", str(img), "--polygon", str(poly), timeout=60)
    assert proc.returncode == 2 and "not a finite number" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "s.db").read_bytes() == before or not json.loads(_cli("history", "--store", store, "--json").stdout)
    with pytest.raises(ValueError, match="finite"):
        Region(box=(0.0, 0.0, float("inf"), 1.0))
    proc = _cli("correct", "s1", "cat", "--store", store, "--image", str(img), "--box", "1,2,30,40", timeout=60)
    assert proc.returncode == 0, proc.stderr

    def no_constants(c: str) -> None:
        raise ValueError(f"invalid JSON constant {c}")

    history = json.loads(_cli("history", "--store", store, "--json").stdout, parse_constant=no_constants)  # strict JSON
    assert history[0]["after"]["region"]["box"] == [1.0, 2.0, 30.0, 40.0]


# ------------------------------- 22. Ctrl-C during extraction, progress in logs


def _many(root: Path, n: int, side: int = 400) -> Path:
    for i in range(n):
        _photo(root / ("a" if i % 2 else "b") / f"{i:03d}.png", 1000 + i, side)
    return root


def test_ctrl_c_during_extraction_keeps_the_features(tmp_path: Path) -> None:
    import re
    import signal
    import time

    root = _many(tmp_path / "photos", 80)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "consist.cli.main", "audit", str(root), "--out", str(out), "--workers", "1", "--no-report"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONSIST_PLUGINS": "spatial"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "store.db").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # some images extracted, not all
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    m = re.search(r"interrupted: features of (\d+) of 80 images are kept in the store; run again with --resume", err)
    assert m, err
    kept = int(m.group(1))
    assert 0 < kept < 80, err
    from consist.stores.uri import open_store

    st = open_store(f"sqlite:///{out / 'store.db'}", create=False)
    try:
        assert len(st) == kept and max(st.artefact_kinds().values()) == kept  # in the store, for --resume
    finally:
        st.close()


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(3):
        _photo(root / "a" / f"a{i}.png", i)
        _photo(root / "b" / f"b{i}.png", 10 + i)
    proc = _cli("audit", str(root), "--out", str(tmp_path / "out"), "--workers", "1", "--no-report")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("features: 6/6 images") for line in lines), proc.stderr
    assert any(line.startswith("verify: 6/6 images") for line in lines), proc.stderr
    assert any(line.startswith("index (") for line in lines), proc.stderr
    assert "\r" not in proc.stderr


def test_failed_audit_leaves_no_empty_out_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli("audit", str(tmp_path / "missing"), "--out", str(out))
    assert proc.returncode == 2 and "no such folder" in proc.stderr
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    proc = _cli("audit", str(tmp_path / "missing"), "--out", str(out))
    assert proc.returncode == 2 and (out / "mine.txt").read_text() == "keep"


# ------------------------------ 23. byte-identical copies with different labels


def test_byte_identical_copies_with_different_labels_are_near_duplicates(tmp_path: Path) -> None:
    import json
    import shutil

    from PIL import Image

    root = tmp_path / "photos"
    rng = np.random.default_rng(7)
    img = np.full((240, 240, 3), 128, np.uint8)
    img[10:60, 10:60] = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)  # keypoints in one corner only: low coverage
    (root / "a").mkdir(parents=True)
    Image.fromarray(img).save(root / "a" / "copy.png")
    (root / "b").mkdir()
    shutil.copyfile(root / "a" / "copy.png", root / "b" / "copy.png")
    for i in range(2):
        _photo(root / "a" / f"a{i}.png", 20 + i)
        _photo(root / "b" / f"b{i}.png", 30 + i)
    shutil.copyfile(root / "a" / "a0.png", root / "a" / "same-label.png")  # same label: not a finding
    proc = _cli("audit", str(root), "--out", str(tmp_path / "out"), "--workers", "1", "--no-report")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["near_duplicates"] == [["a/copy.png", "b/copy.png"]]
    rec = {json.loads(line)["sample"]: json.loads(line) for line in (tmp_path / "out" / "audit.jsonl").read_text().splitlines()}
    assert rec["a/copy.png"]["near_duplicates"] == ["b/copy.png"] and "byte-identical copy of b/copy.png" in rec["a/copy.png"]["reason"]


def test_embedding_a_large_photo_allocates_a_bounded_amount() -> None:
    """The tiny embedder's colour histogram is computed in row blocks (item 5): a
    12-megapixel photo no longer allocates int32 copies of the whole image (~290 MB),
    and the histogram equals the whole-image one."""
    import tracemalloc

    from consist.embedders import TinyImageEmbedder, _colour_histogram

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(3000, 4000, 3), dtype=np.uint8)
    q = (photo.reshape(-1, 3).astype(np.int32) * 4) // 256
    whole = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64).astype(np.float32)
    del q
    assert np.array_equal(_colour_histogram(photo, 4), whole)
    tracemalloc.start()
    TinyImageEmbedder().embed(photo)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB allocated to embed a 12 MP photo"
