"""What the review-app tests and benchmarks/bench_review.py share: a generated audit
folder of any size (real image files drawn by numpy, a real SQLite store, the audit's
files as consist audit writes them), a review server on 127.0.0.1 (in a thread, or the
real ``consist review`` command in a subprocess), and Debian's chromium for Playwright.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import consist
from consist.records import Sample

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
TOKEN = "test-token-0123456789abcdef"


def playwright_ready() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    if CHROMIUM is None:
        return "Debian's chromium is not installed (.ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return ""


def make_audit(root: Path, n: int, *, labels: int = 40, images: int = 24, seed: int = 0) -> Path:
    """A generated audit of ``n`` samples in ``root/audit`` with its store: 6 % flagged
    (with a suggestion), 4 % suspect, the rest confirmed; five neighbours each. The
    images are ``images`` distinct generated JPEGs, shared round-robin."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(images):
        yy, xx = np.mgrid[0:240, 0:320]
        arr = np.stack([(xx * (i + 1)) % 256, (yy * (i + 3)) % 256, ((xx + yy) * (i + 7)) % 256], axis=-1).astype(np.uint8)
        arr[rng.integers(0, 200) :][:40, rng.integers(0, 280) :][:, :40] = 255
        path = img_dir / f"pattern-{i:02d}.jpg"
        Image.fromarray(arr).save(path, quality=85)
        files.append(path)
    out = root / "audit"
    out.mkdir(parents=True, exist_ok=True)
    store_uri = f"sqlite:///{out / 'store.db'}"
    names = [f"label-{j:02d}" for j in range(labels)]
    store = consist.open_store(store_uri)
    rows = []
    with store.transaction():
        store.put([Sample(f"s{i:05d}.jpg", uri=str(files[i % images]), label=names[i % labels], provenance="import") for i in range(n)], reason="generated")
    store.close()
    for i in range(n):
        sid, given = f"s{i:05d}.jpg", names[i % labels]
        u = rng.random()
        status = "flagged" if u < 0.06 else "suspect" if u < 0.10 else "ok"
        wrong = status != "ok"
        sug = names[(i + 1) % labels] if wrong else given
        conf = round(float(0.5 + 0.5 * rng.random()) if wrong else float(0.2 * rng.random()), 4)
        neigh = [{"id": f"s{(i + d) % n:05d}.jpg", "label": names[((i + d) % n) % labels], "similarity": round(0.5 / d, 4), "rank": d - 1} for d in range(1, 6)]
        rows.append(
            {
                "sample": sid,
                "given_label": given,
                "suggested_label": sug,
                "flagged": wrong,
                "confidence": conf,
                "status": status,
                "reason": f"generated: {'looks like ' + repr(sug) if wrong else 'confirmed'}",
                "evidence_neighbour": neigh[0]["id"],
                "evidence_label": neigh[0]["label"],
                "evidence_inliers": 20,
                "verified_neighbours": 1,
                "near_duplicates": [],
                "basis": "verified" if status != "suspect" else "retrieval",
                "label_kind": "specific",
                "suggestion_confidence": conf,
                "group_size": 3,
                "witnesses": 2,
                "meta": {},
                "neighbours": neigh,
                "edges": [],
                "decision": {"votes": []},
            }
        )
    with (out / "audit.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    per_label: dict[str, dict[str, Any]] = {}
    for r in rows:
        d = per_label.setdefault(r["given_label"], {"samples": 0, "flagged": 0, "suspect": 0, "ok": 0, "kind": "specific"})
        d["samples"] += 1
        d[r["status"]] += 1
    summary = {"store": store_uri, "dataset": {"root": str(img_dir), "items": n}, "config": {}, "counts": {"samples": n}, "labels": {"generic": {}, "same_object": []}, "per_label": per_label}
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return out


def copy_audit(src: Path, dst: Path) -> Path:
    """A private copy of an audit folder and its store (the copy's summary names the copy's store)."""
    shutil.copytree(src, dst)
    summary = json.loads((dst / "summary.json").read_text())
    summary["store"] = f"sqlite:///{dst / 'store.db'}"
    (dst / "summary.json").write_text(json.dumps(summary))
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(audit_dir: Path, store_uri: str | None = None) -> Iterator[tuple[str, Any]]:
    """A real uvicorn server on 127.0.0.1 in a thread: (base URL, ReviewSession)."""
    import uvicorn

    from consist.review.server import ReviewSession, create_app

    uri = store_uri or json.loads((audit_dir / "summary.json").read_text())["store"]
    store = consist.open_store(uri)
    port = free_port()
    session = ReviewSession(audit_dir, store, token=TOKEN, allowed_hosts=(f"127.0.0.1:{port}", f"localhost:{port}"))
    server = uvicorn.Server(uvicorn.Config(create_app(session), host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the review server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", session
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


@contextmanager
def serve_cli(audit_dir: Path, *extra: str) -> Iterator[dict[str, Any]]:
    """``consist review AUDIT_DIR --no-browser --port 0 --json`` as a user runs it; yields
    what it printed once it listens. The process is stopped (SIGTERM, then SIGKILL)."""
    cmd = [sys.executable, "-m", "consist.cli.main", "review", str(audit_dir), "--no-browser", "--port", "0", "--json", "--token", TOKEN, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        text = proc.stdout.readline() if proc.stdout else ""
        if not text.strip().startswith("{"):
            proc.kill()
            raise RuntimeError(f"consist review did not start: {text}{proc.stderr.read() if proc.stderr else ''}")
        info = json.loads(text)
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
