"""consist review's server and JSON API, on a real uvicorn server on 127.0.0.1 over the
demo audit of real photos (and a generated 10,000-sample audit): every action is a
store history entry, undo and export agree with the store, the guards hold, and 8
concurrent writers lose nothing."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import consist
from tests.review_support import TOKEN, copy_audit, make_audit, serve_cli, serve_in_thread

H = {"X-Consist-Token": TOKEN}


@pytest.fixture(scope="session")
def demo_audit(tmp_path_factory) -> Path:
    from consist.cli.demo import run_audit_demo

    root = tmp_path_factory.mktemp("review-demo")
    run_audit_demo(root, progress=False)
    return root / "audit"


@pytest.fixture
def audit(demo_audit, tmp_path) -> Path:
    return copy_audit(demo_audit, tmp_path / "audit")


def _flagged(base: str) -> list[dict]:
    return httpx.get(f"{base}/api/queue", params={"status": "flagged"}).json()["items"]


def test_actions_are_store_history_entries_and_undo_and_export_agree(audit, tmp_path):
    with serve_in_thread(audit) as (base, session):
        flagged = _flagged(base)
        assert len(flagged) == 5 and all(r["suggested_label"] != r["given_label"] for r in flagged)
        a, b, c, d = (r["sample"] for r in flagged[:4])
        r = httpx.post(f"{base}/api/actions/accept", json={"sample": a}, headers=H)
        assert r.status_code == 200, r.text
        assert r.json()["entries"][0]["after"]["label"] == flagged[0]["suggested_label"]
        assert httpx.post(f"{base}/api/actions/keep", json={"sample": b}, headers=H).status_code == 200
        new = httpx.post(f"{base}/api/actions/relabel", json={"sample": c, "label": "mug"}, headers=H)
        assert new.status_code == 400 and new.json()["detail"]["code"] == "new_label"  # a typo must not become a class
        assert httpx.post(f"{base}/api/actions/relabel", json={"sample": c, "label": "mug", "create": True}, headers=H).status_code == 200
        r = httpx.post(f"{base}/api/actions/region", json={"sample": d, "box": [10, 20, 110, 220]}, headers=H)
        assert r.status_code == 200 and r.json()["entries"][0]["action"] == "region"
        # the page reads the store: decisions show
        q = {x["sample"]: x for x in _flagged(base)}
        assert (q[a]["decision"], q[b]["decision"], q[c]["decision"]) == ("accepted", "kept", "relabelled")
        assert q[d]["has_region"] is True
        # undo the last action (the region) from the page
        r = httpx.post(f"{base}/api/actions/undo", json={}, headers=H)
        assert r.status_code == 200 and r.json()["entries"][0]["undoes"] is not None
        store = session.store
        assert store.get(d).region is None
        hist = store.history(limit=10)
        reasons = [e.reason for e in hist]
        assert any(x.startswith("review: accepted the suggestion") for x in reasons)
        assert any(x.startswith("review: kept the given label") for x in reasons)
        assert all(e.provenance == "user" for e in hist[:5])
        # the export button and consist export say what the store says
        csv_bytes = httpx.get(f"{base}/api/export").content
        csv_page = csv_bytes.decode()
        out = tmp_path / "labels.csv"
        cli = subprocess.run([sys.executable, "-m", "consist.cli.main", "export", "--store", store.uri, "--out", str(out)], capture_output=True, text=True)
        assert cli.returncode == 0, cli.stderr
        assert out.read_bytes() == csv_bytes
        assert f"{a},{flagged[0]['suggested_label']}" in csv_page and f"{c},mug" in csv_page
        # consist undo in a terminal shows on the page's next request
        accept_seq = next(e.seq for e in hist if e.sample_id == a and e.action == "relabel")
        cli = subprocess.run([sys.executable, "-m", "consist.cli.main", "undo", str(accept_seq), "--store", store.uri], capture_output=True, text=True)
        assert cli.returncode == 0, cli.stderr
        q = {x["sample"]: x for x in _flagged(base)}
        assert q[a]["decision"] == "pending" and q[a]["current_label"] == flagged[0]["given_label"]


def test_bulk_accept_is_one_batch_and_undo_reverts_it_whole(audit):
    with serve_in_thread(audit) as (base, session):
        before = len(session.store.history(limit=None))
        r = httpx.post(f"{base}/api/actions/bulk", json={"status": "flagged", "min_confidence": 0.5, "expect": 5}, headers=H)
        assert r.status_code == 200, r.text
        assert len(r.json()["entries"]) == 5
        stale = httpx.post(f"{base}/api/actions/bulk", json={"status": "flagged", "expect": 5}, headers=H)
        assert stale.status_code == 400 and "now holds 0" in stale.json()["detail"]
        assert {x["decision"] for x in _flagged(base)} == {"accepted"}
        r = httpx.post(f"{base}/api/actions/undo", headers=H)
        assert r.status_code == 200 and len(r.json()["entries"]) == 5
        assert {x["decision"] for x in _flagged(base)} == {"pending"}
        assert len(session.store.history(limit=None)) == before + 10


def test_stale_views_are_refused_and_groups_undo_together(audit):
    with serve_in_thread(audit) as (base, session):
        rows = _flagged(base)
        a, b = rows[0], rows[1]
        # another tab changed a; this tab still shows the given label
        assert httpx.post(f"{base}/api/actions/accept", json={"sample": a["sample"], "expect_label": a["given_label"]}, headers=H).status_code == 200
        stale = httpx.post(f"{base}/api/actions/keep", json={"sample": a["sample"], "expect_label": a["given_label"]}, headers=H)
        assert stale.status_code == 409 and stale.json()["detail"]["code"] == "stale" and "changed elsewhere" in stale.json()["detail"]["message"]
        assert session.store.get(a["sample"]).label == a["suggested_label"]  # nothing was overwritten
        dry = httpx.post(f"{base}/api/actions/bulk", json={"status": "flagged", "dry_run": True}, headers=H).json()
        assert dry["would_change"] == 4 and dry["entries"] == [] and session.store.get(b["sample"]).label == b["given_label"]
        batch = httpx.post(f"{base}/api/actions/bulk", json={"status": "flagged", "expect": 4}, headers=H).json()["entries"]
        r = httpx.post(f"{base}/api/actions/undo", json={"seqs": [e["seq"] for e in batch]}, headers=H)
        assert r.status_code == 200 and len(r.json()["entries"]) == 4
        assert session.store.get(b["sample"]).label == b["given_label"]
        assert session.store.get(a["sample"]).label == a["suggested_label"]  # not part of the group


def test_sentence_box_goes_through_the_registered_interpreter(audit):
    pytest.importorskip("consist_semantic")
    with serve_in_thread(audit) as (base, session):
        sid = _flagged(base)[0]["sample"]
        r = httpx.post(f"{base}/api/actions/tell", json={"sample": sid, "sentence": "this is the zeppelin"}, headers=H)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["parser"] == "grammar" and body["entries"][0]["reason"] == "told: this is the zeppelin"
        assert session.store.get(sid).label == "zeppelin"
        bad = httpx.post(f"{base}/api/actions/tell", json={"sample": sid, "sentence": "   "}, headers=H)
        assert bad.status_code == 400
        preview = httpx.post(f"{base}/api/actions/tell", json={"sample": sid, "sentence": "it's not a zeppelin, it's a blimp", "apply": False}, headers=H).json()
        assert preview["applied"] is False and preview["entries"] == [] and "blimp" in preview["actions"][0]
        assert session.store.get(sid).label == "zeppelin"
        negation = httpx.post(f"{base}/api/actions/tell", json={"sample": sid, "sentence": "this is not a zeppelin"}, headers=H)
        assert negation.status_code == 400 and "says what it is not" in negation.json()["detail"]
        assert session.store.get(sid).label == "zeppelin"


def test_guards_token_host_and_no_paths(audit):
    with serve_in_thread(audit) as (base, session):
        sid = _flagged(base)[0]["sample"]
        r = httpx.post(f"{base}/api/actions/accept", json={"sample": sid})
        assert r.status_code == 403 and "X-Consist-Token" in r.json()["detail"]
        r = httpx.post(f"{base}/api/actions/accept", json={"sample": sid}, headers={"X-Consist-Token": "wrong"})
        assert r.status_code == 403
        assert httpx.post(f"{base}/api/search", json={"sample": sid}).status_code == 403
        assert session.store.get(sid).provenance.value == "import"  # nothing was written
        assert httpx.get(f"{base}/api/overview", headers={"Host": "attacker.example:80"}).status_code == 421
        for bad in ("../../../../etc/passwd", "/etc/passwd", str(audit / "store.db")):
            assert httpx.get(f"{base}/api/image", params={"id": bad}).status_code == 404
        img = httpx.get(f"{base}/api/image", params={"id": sid, "size": 160})
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        csp = httpx.get(f"{base}/").headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert httpx.post(f"{base}/api/actions/relabel", json={"sample": sid, "label": "a\nb"}, headers=H).status_code == 400


def test_openapi_documents_the_api(audit):
    with serve_in_thread(audit) as (base, _session):
        spec = httpx.get(f"{base}/openapi.json").json()
        for path in ("/api/queue", "/api/sample", "/api/actions/accept", "/api/actions/undo", "/api/search", "/api/decide", "/api/export"):
            assert path in spec["paths"], path


def test_search_and_decide_find_the_object(audit):
    from PIL import Image

    with serve_in_thread(audit) as (base, session):
        ok = httpx.get(f"{base}/api/queue", params={"status": "ok", "limit": 1}).json()["items"][0]
        r = httpx.post(f"{base}/api/search", json={"sample": ok["sample"], "top": 3}, headers=H, timeout=120)
        assert r.status_code == 200, r.text
        top = r.json()["results"][0]
        assert top["label"] == ok["given_label"] and top["pair"]["verified"] and top["pair"]["neighbour_polygon"]
        uri = session.store.get(ok["sample"]).uri
        buf = io.BytesIO()
        Image.open(uri).convert("RGB").save(buf, format="JPEG")
        b64 = base64.b64encode(buf.getvalue()).decode()
        r = httpx.post(f"{base}/api/decide", json={"image": b64, "candidates": [["wrong-label", 0.6], [ok["given_label"], 0.4]]}, headers=H, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["label"] == ok["given_label"]
        assert len(session.store) == 45 + 0  # decide never writes (adapt off)
        # a dropped image (not in the store) searches too, and is shown from memory
        r = httpx.post(f"{base}/api/search", json={"image": b64, "top": 2}, headers=H, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["label"] == ok["given_label"]
        qid = r.json()["query"]["id"]
        assert qid.startswith("upload:") and httpx.get(f"{base}/api/image", params={"id": qid}).status_code == 200
        bad = httpx.post(f"{base}/api/search", json={"image": base64.b64encode(b"not an image").decode()}, headers=H)
        assert bad.status_code in (400, 409) and "image" in bad.json()["detail"].lower()


def test_eight_concurrent_writers_lose_no_history_entry(tmp_path):
    audit = make_audit(tmp_path, 400)
    with serve_in_thread(audit) as (base, session):
        before = len(session.store.history(limit=None))
        errors: list[str] = []

        def writer(w: int) -> None:
            with httpx.Client(base_url=base, headers=H, timeout=60) as client:
                for i in range(25):
                    sid = f"s{w * 25 + i:05d}.jpg"
                    r = client.post("/api/actions/relabel", json={"sample": sid, "label": f"fixed-{w}", "create": True})
                    if r.status_code != 200:
                        errors.append(r.text)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        hist = session.store.history(limit=None)
        assert len(hist) == before + 200
        assert len({e.seq for e in hist}) == len(hist)
        for w in range(8):
            assert {session.store.get(f"s{w * 25 + i:05d}.jpg").label for i in range(25)} == {f"fixed-{w}"}


def test_queue_pages_a_10000_sample_audit(tmp_path):
    audit = make_audit(tmp_path, 10_000)
    with serve_in_thread(audit) as (base, _session):
        seen: list[str] = []
        for offset in (0, 50, 9950):
            page = httpx.get(f"{base}/api/queue", params={"offset": offset, "limit": 50}).json()
            assert page["total"] == 10_000 and len(page["items"]) == 50
            seen += [x["sample"] for x in page["items"]]
        assert len(set(seen)) == 150
        first = httpx.get(f"{base}/api/queue", params={"limit": 50}).json()["items"]
        assert first[0]["status"] == "flagged" and first[0]["confidence"] >= first[1]["confidence"]
        ov = httpx.get(f"{base}/api/overview").json()
        assert ov["samples"] == 10_000 and sum(ov["status"].values()) == 10_000
        # a bulk action's scope: what is wrong AND whose suggestion is sure enough
        rows = [json.loads(line) for line in (audit / "audit.jsonl").open()]
        want = sum(1 for r in rows if r["status"] in ("flagged", "suspect") and r["confidence"] >= 0.8 and r["suggestion_confidence"] >= 0.9)
        dry = httpx.post(f"{base}/api/actions/bulk", json={"status": "flagged,suspect", "min_confidence": 0.8, "min_suggestion_confidence": 0.9, "dry_run": True}, headers=H).json()
        assert dry["would_change"] == want > 0


def test_cli_errors_are_one_line_and_exit_2(tmp_path, audit):
    r = subprocess.run([sys.executable, "-m", "consist.cli.main", "review", str(tmp_path / "nope"), "--no-browser"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such folder" in r.stderr
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "consist.cli.main", "review", str(tmp_path / "empty"), "--no-browser"], capture_output=True, text=True)
    assert r.returncode == 2 and "not an audit folder (no summary.json)" in r.stderr and "consist audit IMAGES --out" in r.stderr
    with serve_cli(audit) as info:
        port = info["url"].rsplit(":", 1)[1].strip("/")
        assert httpx.get(info["url"] + "api/overview").json()["samples"] == 46
        r = subprocess.run([sys.executable, "-m", "consist.cli.main", "review", str(audit), "--no-browser", "--port", port], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and f"port {port}" in r.stderr and "in use" in r.stderr


def test_store_is_the_one_truth_after_review_and_cli(audit):
    """A change made with consist correct while the server runs shows on the page."""
    with serve_in_thread(audit) as (base, session):
        sid = _flagged(base)[1]["sample"]
        s = consist.open_store(session.store.uri)
        s.relabel(sid, "changed-elsewhere", provenance="user", reason="another reviewer")
        s.close()
        row = httpx.get(f"{base}/api/sample", params={"id": sid}).json()
        assert row["current_label"] == "changed-elsewhere" and row["decision"] == "relabelled"
        assert json.dumps(row)  # JSON all the way


def test_review_on_a_postgresql_store(audit, pg_uri):
    """The same review over a shared PostgreSQL store (consist store copy moved the
    audit's store there): actions, undo and 8 concurrent writers."""
    from consist.stores.copy import copy_store

    src = consist.open_store(f"sqlite:///{audit / 'store.db'}")
    dst = consist.open_store(pg_uri)
    try:
        copy_store(src, dst)
    finally:
        src.close()
        dst.close()
    with serve_in_thread(audit, store_uri=pg_uri) as (base, session):
        assert session.store.uri.startswith("postgresql://")
        flagged = _flagged(base)
        assert len(flagged) == 5
        before = len(session.store.history(limit=None))
        errors: list[str] = []

        def writer(row: dict) -> None:
            r = httpx.post(f"{base}/api/actions/accept", json={"sample": row["sample"], "expect_label": row["given_label"]}, headers=H, timeout=60)
            if r.status_code != 200:
                errors.append(r.text)

        def region(row: dict) -> None:
            r = httpx.post(f"{base}/api/actions/region", json={"sample": row["sample"], "box": [1, 1, 50, 50]}, headers=H, timeout=60)
            if r.status_code != 200:
                errors.append(r.text)

        threads = [threading.Thread(target=writer, args=(row,)) for row in flagged] + [threading.Thread(target=region, args=(row,)) for row in flagged[:3]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        hist = session.store.history(limit=None)
        assert len(hist) == before + 8, [(e.seq, e.action, e.sample_id) for e in hist[:10]]
        assert len({e.seq for e in hist}) == len(hist)
        assert {x["decision"] for x in _flagged(base)} == {"accepted"}
        r = httpx.post(f"{base}/api/actions/undo", json={"seq": max(e.seq for e in hist if e.action == "relabel")}, headers=H)
        assert r.status_code == 200
        assert sum(x["decision"] == "pending" for x in _flagged(base)) == 1
