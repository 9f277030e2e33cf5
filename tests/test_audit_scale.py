"""What keeps the audit N * k at scale: the label model's non-link step computed per
group size (the same numbers as the groups x groups sum it replaced, without its
quadratic cost), and a report.html that embeds a bounded table shown a page at a
time (opened in a real browser when one is installed)."""

from __future__ import annotations

import itertools
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from consist.audit import labelmodel
from consist.audit.decide import AuditRow
from consist.audit.labelmodel import NON_LINK_MIN_BELIEF, LabelModelInput, fit_label_model
from consist.audit.report_html import MAX_TABLE_ROWS, PAGE_ROWS, write_report
from consist.contracts.reporter import AuditOutcome


def _dense_non_link(base: np.ndarray, sizes: list[int], v: float, iters: int = 20, damping: float = 0.5) -> np.ndarray:
    """The groups x groups formulation the bucketed one replaced (the reference)."""
    logu = np.log(np.clip(base, 1e-300, None))
    sz = np.asarray(sizes, dtype=float)
    q = base.copy()
    for _ in range(iters):
        pen = np.zeros_like(q)
        for t in range(q.shape[1]):
            idx = np.flatnonzero(q[:, t] > NON_LINK_MIN_BELIEF)
            if len(idx) < 2:
                continue
            W = 1.0 - (1.0 - v) ** np.minimum.outer(sz[idx], sz[idx])
            np.fill_diagonal(W, 0.0)
            pen[idx, t] = np.log(np.clip(1.0 - W * q[idx, t][None, :], 1e-12, None)).sum(axis=1)
        lb = logu + pen
        nb = np.exp(lb - lb.max(axis=1, keepdims=True))
        nb /= nb.sum(axis=1, keepdims=True)
        new = damping * q + (1.0 - damping) * nb
        done = float(np.abs(new - q).max()) < labelmodel.EM_TOLERANCE
        q = new
        if done:
            break
    return q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_non_link_per_group_size_equals_the_pairwise_sum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups, classes = 300, 12
    logits = rng.normal(0, 3, size=(groups, classes))
    logits[rng.random((groups, classes)) < 0.5] -= 30  # many beliefs under the threshold, as in real fits
    base = np.exp(logits - logits.max(axis=1, keepdims=True))
    base /= base.sum(axis=1, keepdims=True)
    sizes = [int(s) for s in rng.choice([2, 2, 3, 4, 7, 12], size=groups)]
    got = labelmodel._with_non_link(base, sizes, 0.3)
    want = _dense_non_link(base, sizes, 0.3)
    assert np.abs(got - want).max() < 1e-9
    assert np.abs(got - base).max() > 1e-3  # the step does something


def test_non_link_tracks_a_whole_row_when_its_small_beliefs_could_matter() -> None:
    """Rows whose whole mass sits on a class many other groups hold are penalised so
    hard that their tiny beliefs (below the tracked level) grow past the threshold:
    the guard tracks those rows whole, and the result still equals the pairwise sum."""
    groups, classes = 120, 6
    base = np.full((groups, classes), 1e-12)
    base[:, 0] = 1.0
    base[100:, 1:] = 1e-11  # far below the tracked level: untracked at first
    base[:100, 1] = 1e-3
    base /= base.sum(axis=1, keepdims=True)
    sizes = [5] * groups
    got = labelmodel._with_non_link(base, sizes, 0.6)
    want = _dense_non_link(base, sizes, 0.6)
    assert np.abs(got - want).max() < 1e-9
    assert got[100:, 1:].max() > 100 * labelmodel.NON_LINK_TRACKED  # those beliefs did grow


def _synthetic(n: int, classes: int, seed: int = 0) -> LabelModelInput:
    """``n`` images of ``classes`` objects in groups of 1-6 views, 10% label noise."""
    rng = random.Random(seed)
    given: dict[str, str] = {}
    true: dict[str, str] = {}
    inliers: dict[tuple[str, str], int] = {}
    ids: list[str] = []
    while len(ids) < n:
        c = rng.randrange(classes)
        grp = [f"s{len(ids) + j:06d}" for j in range(rng.choice([1, 1, 2, 2, 3, 4, 6]))]
        for s in grp:
            true[s] = f"c{c}"
            given[s] = f"c{c}" if rng.random() > 0.1 else f"c{rng.randrange(classes)}"
        for a, b in itertools.pairwise(grp):
            inliers[(a, b)] = rng.randint(10, 100)
        ids += grp
    by_class: dict[str, list[str]] = {}
    for s in ids:
        by_class.setdefault(true[s], []).append(s)
    neighbours = {}
    for s in ids:
        same = [x for x in by_class[true[s]] if x != s][:5]
        neighbours[s] = [(x, r) for r, x in enumerate(same + [rng.choice(ids) for _ in range(10 - len(same))]) if x != s]
    return LabelModelInput(given=given, neighbours=neighbours, inliers=inliers)


def test_label_model_time_grows_linearly_with_the_collection() -> None:
    """2k -> 8k images of 100 objects: 4x the groups. The groups x groups non-link
    step made that ~16x (and 133 s at 10k); linear work makes it ~4x."""
    times = {}
    for n in (2000, 8000):
        data = _synthetic(n, 100)
        fit_label_model(data)  # warm
        t0 = time.perf_counter()
        fit_label_model(data)
        times[n] = time.perf_counter() - t0
    assert times[8000] / times[2000] < 9, times


# ------------------------------------------------------------------- report.html


def _outcome(tmp_path: Path, n: int) -> AuditOutcome:
    statuses = ["ok", "plausible", "flagged", "suspect", "unverifiable"]
    rows = []
    for i in range(n):
        status = statuses[i % len(statuses)]
        flagged = status in ("flagged", "suspect")
        rows.append(
            AuditRow(
                sample=f"l{i % 50}/{i:06d}.jpg",
                given_label=f"l{i % 50}",
                suggested_label=f"l{(i + 1) % 50}" if flagged else f"l{i % 50}",
                flagged=flagged,
                confidence=round((i % 97) / 97, 4),
                status=status,
                reason="because",
            )
        )
    summary = {
        "dataset": {"root": str(tmp_path), "csv": None},
        "counts": {"samples": n, "flagged": 0, "suspect": 0, "ok": 0, "plausible": 0, "unverifiable": 0, "unreadable": 0, "near_duplicate_pairs": 0},
        "labels": {},
        "timings": {"total_s": 1.0},
        "failures": [],
    }
    return AuditOutcome(out=tmp_path, rows=tuple(rows), summary=summary, store="memory://", dataset=str(tmp_path), records=lambda: iter(()))


def test_report_of_a_large_audit_embeds_a_bounded_table(tmp_path: Path) -> None:
    n = 2 * MAX_TABLE_ROWS + 7
    out = tmp_path / "report.html"
    t0 = time.perf_counter()
    write_report(out, _outcome(tmp_path, n))
    assert time.perf_counter() - t0 < 30
    page = out.read_text(encoding="utf-8")
    assert page.count('<tr class="') == MAX_TABLE_ROWS
    assert f"first {MAX_TABLE_ROWS:,} of {n:,} samples" in page
    # flagged rows come first in the table: all of them fit here
    assert page.count('<tr class="flagged"') + page.count('<tr class="suspect"') == sum(1 for i in range(n) if i % 5 in (2, 3))
    assert len(page) < 4 * 2**20


def test_report_table_is_shown_a_page_at_a_time_in_a_browser(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium")
    out = tmp_path / "report.html"
    write_report(out, _outcome(tmp_path, 3000))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            t0 = time.perf_counter()
            page.goto(out.as_uri())
            page.wait_for_selector("#page-info")
            load_s = time.perf_counter() - t0
            visible = 'document.querySelectorAll("#samples tbody tr:not([style*=none])").length'
            assert page.evaluate(visible) == PAGE_ROWS
            assert page.inner_text("#page-info") == f"rows 1-{PAGE_ROWS} of 3000, page 1 of {3000 // PAGE_ROWS}"
            page.click("#next")
            assert page.inner_text("#page-info").startswith(f"rows {PAGE_ROWS + 1}-{2 * PAGE_ROWS} of 3000")
            page.select_option("#f-status", "suspect")
            assert page.inner_text("#shown") == "600"
            assert page.evaluate(visible) == PAGE_ROWS
            assert page.evaluate('[...document.querySelectorAll("#samples tbody tr:not([style*=none])")].every(r => r.dataset.status === "suspect")')
            page.click("#samples th:nth-child(5)")  # sort by confidence: still one page
            assert page.evaluate(visible) == PAGE_ROWS
            assert load_s < 20
        finally:
            browser.close()


# ------------------------------------------------- byte-identical copies, bounded


def test_thousands_of_identical_copies_list_a_bounded_number_each(tmp_path: Path) -> None:
    """A placeholder image copied under two labels 600 times: each row lists at most
    MAX_COPIES_LISTED copies of the other label (all copies against all would be
    360,000 pairs, and a row naming 300 files)."""
    from types import SimpleNamespace

    from consist.audit import run
    from consist.audit.decide import Decisions
    from consist.audit.labelmodel import LabelFindings

    payload = b"\x89PNG placeholder" * 10
    items = []
    for i in range(600):
        p = tmp_path / f"{i:04d}.png"
        p.write_bytes(payload)
        items.append(SimpleNamespace(id=f"{'ab'[i % 2]}/{i:04d}.png", uri=str(p), label="ab"[i % 2]))
    (tmp_path / "other.png").write_bytes(payload[:-1] + b"!")  # same size, other bytes: not a copy
    items.append(SimpleNamespace(id="b/other.png", uri=str(tmp_path / "other.png"), label="b"))
    ds = SimpleNamespace(items=items)
    rows = tuple(AuditRow(sample=it.id, given_label=it.label, suggested_label=it.label, flagged=False, confidence=0.0, status="ok", reason="r") for it in items)
    decisions = Decisions(rows=rows, findings=LabelFindings(generic={}, same_object=[], label_stats={}), model={})
    t0 = time.perf_counter()
    out = run._with_identical_copies(decisions, ds, run._contents(ds))
    assert time.perf_counter() - t0 < 10
    by = {r.sample: r for r in out.rows}
    for r in out.rows[:-1]:
        assert len(r.near_duplicates) == run.MAX_COPIES_LISTED
        assert all(d.split("/")[0] != r.given_label for d in r.near_duplicates)
        assert "byte-identical copy of" in r.reason
    assert by["b/other.png"].near_duplicates == () and by["b/other.png"].reason == "r"
    # deterministic: the first copies by id
    assert by["a/0000.png"].near_duplicates == tuple(f"b/{i:04d}.png" for i in range(1, 2 * run.MAX_COPIES_LISTED, 2))


# ------------------------------------------------------------- bench_scale.py


def test_scale_benchmark_quick_run_prints_stages_memory_and_targets(tmp_path: Path) -> None:
    """Two tiny sizes on the local executor (scikit-image photos only): every stage
    timed, the parent's and the workers' peak memory, the store size, the targets."""
    import json
    import subprocess
    import sys

    pytest.importorskip("consist_spatial")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"
    cmd = [sys.executable, str(script), "--sizes", "40,80", "--configs", "local", "--no-shared", "--work", str(tmp_path), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert [x["images"] for x in out["results"]] == [40, 80]
    for x in out["results"]:
        assert set(x["stage_ms_per_image"]) == {"read", "extract", "index", "verify", "decide", "outputs"}
        assert x["stage_ms_per_image"]["verify"] > 0 and x["parent_peak_rss_mb"] > 50
        assert len(x["worker_peak_rss_mb"]) == 2 and x["store_kb_per_image"] > 0
        assert x["counts"]["samples"] == x["images"]
        assert x["flags_same_landmark"] == 0  # scikit-image's photos show nothing in common
    assert {t["metric"] for t in out["targets"]} == {
        "local: time per image 80 / 40",
        "local: parent peak RSS 80 / 40",
        "local: largest worker peak RSS 80 / 40",
    }
    assert [p["stage"] for p in out["projection"]] == ["read", "extract", "index", "verify", "decide", "outputs"]
    # the generated dataset: 8 views per object, flipped labels and distractors recorded
    manifest = json.loads((tmp_path / "dataset-80" / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["items"]) == 80 and any(it["object"] is None for it in manifest["items"])


def test_scale_benchmark_flag_precision_sets_apart_tiles_of_one_landmark(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flag that names, for a correct image, a tile of ANOTHER photo of the same
    landmark may be right (one surface, two labels): counted apart; a tile of the same
    photo or of another landmark is a false flag in both figures."""
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"
    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_scale_under_test", script)
        assert spec is not None and spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(script.parent))
    monkeypatch.setattr(bench, "_landmarks", lambda: {"p1": frozenset({"tower"}), "p2": frozenset({"tower"}), "p3": frozenset({"door"})})
    items = [
        {"sample": "s1", "object": "A", "given": "A", "flipped": False, "source": "p1#0"},
        {"sample": "s2", "object": "B", "given": "B", "flipped": False, "source": "p2#0"},
        {"sample": "s3", "object": "C", "given": "C", "flipped": False, "source": "p3#0"},
        {"sample": "s4", "object": "D", "given": "D", "flipped": False, "source": "p1#1"},
        {"sample": "s5", "object": "A", "given": "C", "flipped": True, "source": "p1#0"},
        {"sample": "s6", "object": None, "given": "B", "flipped": False, "source": "p3#1"},
    ]
    rows = [
        {"sample": "s1", "flagged": "true", "suggested_label": "B"},  # another photo of the tower: set apart
        {"sample": "s2", "flagged": "true", "suggested_label": "C"},  # another landmark: a false flag
        {"sample": "s3", "flagged": "false", "suggested_label": "C"},
        {"sample": "s4", "flagged": "true", "suggested_label": "A"},  # a tile of the same photo: a false flag
        {"sample": "s5", "flagged": "true", "suggested_label": "A"},  # the planted flip
        {"sample": "s6", "flagged": "true", "suggested_label": "C"},  # the distractor
    ]
    q = bench.flag_quality({"items": items}, rows)
    assert q == {"planted_flips": 1, "flipped_flagged": 1, "flag_precision": 0.4, "flags_same_landmark": 1, "flag_precision_other": 0.5}
