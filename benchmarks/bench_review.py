"""consist review at 10,000 samples: time to the first page, per-page time, and the JSON
API's per-request latency (p50/p95) under 8 concurrent clients.

The audit is generated (tests/review_support.make_audit: real JPEG files, a real SQLite
store, audit.jsonl / summary.json as consist audit writes them) and served by the real
app on a real uvicorn server on 127.0.0.1. With Playwright and Debian's chromium
present, the browser's own times are measured too (page ready, next-page click until the
table shows the page).

Baseline, side by side: a page without paging, which loads the whole table — the audit's
10,000 verdicts parsed from audit.jsonl, as a static report embeds them.

    python benchmarks/bench_review.py            # 10,000 samples
    python benchmarks/bench_review.py --quick    # 1,000 samples, fewer requests
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

#: Targets (a reviewer's patience; FiftyOne/cleanlab Studio page at interactive speed).
FIRST_PAGE_S = 2.0  # server start (index load) + overview + first queue page
PAGE_MS = 200.0  # one queue page of 50, server side
API_P95_MS = 250.0  # per request, 8 concurrent clients


def _api_load(base: str, token: str, n_samples: int, clients: int, per_client: int) -> dict[str, Any]:
    """``clients`` threads, each a mix of reads (queue page, sample view) and writes
    (relabel): per-request latency."""
    import httpx

    times: dict[str, list[float]] = {"queue": [], "sample": [], "relabel": []}
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=base, headers={"X-Consist-Token": token}, timeout=60) as http:
            for i in range(per_client):
                kind = ("queue", "sample", "relabel")[i % 3]
                sid = f"s{(c * per_client + i) % n_samples:05d}.jpg"
                t0 = time.perf_counter()
                if kind == "queue":
                    r = http.get("/api/queue", params={"offset": (i * 50) % n_samples, "limit": 50})
                elif kind == "sample":
                    r = http.get("/api/sample", params={"id": sid})
                else:
                    r = http.post("/api/actions/relabel", json={"sample": sid, "label": f"bench-{c}", "create": True})
                dt = time.perf_counter() - t0
                with lock:
                    times[kind].append(dt)
                    if r.status_code != 200:
                        errors.append(f"{kind} {r.status_code}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    every = [x for v in times.values() for x in v]
    return {"all": C.summarise(every), **{k: C.summarise(v) for k, v in times.items()}, "requests": len(every), "wall_s": wall, "rps": len(every) / wall, "errors": errors[:5], "n_errors": len(errors)}


def _browser(url: str, open_url: str, pages: int) -> dict[str, Any] | None:
    from tests.review_support import playwright_ready

    if playwright_ready():
        return None
    from playwright.sync_api import expect

    from tests.review_support import browser

    with browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 900})
        t0 = time.perf_counter()
        page.goto(open_url)
        page.wait_for_selector("body[data-ready=overview]")
        overview_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.goto(url + "#/queue")
        page.wait_for_selector("#queue tbody tr")
        queue_s = time.perf_counter() - t0
        per_page = []
        total = page.locator("#page-info").first.inner_text().split(" of ")[1]
        for n in range(2, pages + 2):
            t0 = time.perf_counter()
            page.locator("button:has-text('next page')").first.click()
            expect(page.locator("#page-info").first).to_have_text(f"{(n - 1) * 50 + 1}–{n * 50} of {total}")
            per_page.append(time.perf_counter() - t0)
    return {"overview_s": overview_s, "queue_first_page_s": queue_s, "next_page": C.summarise(per_page)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="1,000 samples, fewer requests")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=60, help="requests per client")
    ap.add_argument("--pages", type=int, default=20, help="queue pages fetched one after another")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--json-out")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.requests, args.pages = 1000, 15, 5
    import httpx

    from tests.review_support import TOKEN, make_audit, serve_in_thread

    result: dict[str, Any] = {"machine": C.machine_info(), "samples": args.samples}
    with tempfile.TemporaryDirectory() as tmp:
        with C.progress(f"generating a {args.samples}-sample audit", args.json):
            audit = make_audit(Path(tmp), args.samples)
        # baseline: the whole table, parsed (what a page without paging loads)
        t0 = time.perf_counter()
        rows = [json.loads(line) for line in (audit / "audit.jsonl").open(encoding="utf-8")]
        result["baseline_full_table_s"] = time.perf_counter() - t0
        result["baseline_full_table_mb"] = (audit / "audit.jsonl").stat().st_size / 1e6
        del rows
        t0 = time.perf_counter()
        with serve_in_thread(audit) as (base, _session):
            started = time.perf_counter() - t0
            with httpx.Client(base_url=base, timeout=60) as http:
                t1 = time.perf_counter()
                http.get("/api/overview").raise_for_status()
                http.get("/api/queue", params={"limit": 50}).raise_for_status()
                first = time.perf_counter() - t1
                pages = []
                for p in range(args.pages):
                    t1 = time.perf_counter()
                    r = http.get("/api/queue", params={"offset": p * 50, "limit": 50})
                    r.raise_for_status()
                    pages.append(time.perf_counter() - t1)
                filtered = C.time_calls(lambda: http.get("/api/queue", params={"status": "flagged", "min_confidence": 0.7, "limit": 50}).raise_for_status(), max(3, args.pages // 2))
                page_kb = len(r.content) / 1e3
            result["server_start_s"] = started
            result["first_page_s"] = started + first
            result["page"] = C.summarise(pages)
            result["page_filtered"] = C.summarise(filtered)
            result["page_kb"] = page_kb
            with C.progress(f"API load: {args.clients} clients x {args.requests} requests", args.json):
                result["api"] = _api_load(base, TOKEN, args.samples, args.clients, args.requests)
            if not args.no_browser:
                with C.progress("browser (Playwright + chromium)", args.json):
                    result["browser"] = _browser(base + "/", base + "/#token=" + TOKEN, max(3, args.pages // 4))
    targets = [
        C.Target(f"time to first page at {args.samples} samples (start + overview + queue)", result["first_page_s"], "<", FIRST_PAGE_S, "s"),
        C.Target("queue page of 50, server side, p95", result["page"]["p95_ms"], "<", PAGE_MS, "ms"),
        C.Target(f"JSON API p95 with {args.clients} concurrent clients", result["api"]["all"]["p95_ms"], "<", API_P95_MS, "ms"),
        C.Target("API errors under load", result["api"]["n_errors"], "<", 1, "errors"),
    ]
    if result.get("browser"):
        targets.append(C.Target("browser: next page until shown, p95", result["browser"]["next_page"]["p95_ms"], "<", 2 * PAGE_MS + 300, "ms", required=False))

    def report() -> None:
        C.print_machine(result["machine"])
        b = result.get("browser") or {}
        C.print_table(
            f"consist review at {args.samples} samples",
            ["what", "consist review (paged)", "baseline: whole table"],
            [
                ["first page (s)", f"{result['first_page_s']:.2f} (start {result['server_start_s']:.2f})", f"{result['baseline_full_table_s']:.2f} to parse {result['baseline_full_table_mb']:.1f} MB"],
                ["queue page p50 / p95 (ms)", f"{result['page']['median_ms']:.1f} / {result['page']['p95_ms']:.1f} ({result['page_kb']:.0f} kB)", "-"],
                ["filtered page p50 (ms)", f"{result['page_filtered']['median_ms']:.1f}", "-"],
                ["browser: overview / queue (s)", f"{b['overview_s']:.2f} / {b['queue_first_page_s']:.2f}" if b else "not measured", "-"],
                ["browser: next page p50 / p95 (ms)", f"{b['next_page']['median_ms']:.0f} / {b['next_page']['p95_ms']:.0f}" if b else "not measured", "-"],
            ],
        )
        api = result["api"]
        C.print_table(
            f"JSON API, {args.clients} concurrent clients ({api['requests']} requests, {api['rps']:.0f}/s)",
            ["request", "p50 ms", "p95 ms"],
            [[k, f"{api[k]['median_ms']:.1f}", f"{api[k]['p95_ms']:.1f}"] for k in ("all", "queue", "sample", "relabel")],
        )
        C.print_targets(targets)

    return C.finish(result, targets, args, report)


if __name__ == "__main__":
    sys.exit(main())
