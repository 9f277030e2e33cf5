"""Misbehaving OpenAI-compatible servers on 127.0.0.1 (issue 12): a key echoed
back in any spelling, absurd log-probabilities, a server that drips its answer, a
dead port. The API key is never printed; a time-out is a deadline; a bad answer
is an abstention, never a confident vote."""

from __future__ import annotations

import json
import math
import time

import pytest

from consist_semantic import ChatRequest, LMMError, OpenAIChatBackend, ReflectionChecker, encode_image
from consist_semantic.redact import redact, redact_snippet
from consist_semantic.testing import Reply, completion

KEY = "sk-live-AbCdEf123456"


def backend(server, **kw):
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("max_retries", 0)
    return OpenAIChatBackend(server.base_url, "scripted-vlm", KEY, **kw)


def _leaks(text: str) -> bool:
    """Any 6 consecutive characters of the key (in any case) in ``text``."""
    low = text.lower()
    return any(KEY[i : i + 6].lower() in low for i in range(len(KEY) - 5))


def _forms(key: str) -> dict[str, str]:
    return {
        "plain": key,
        "json-escaped": "".join(f"\\u{ord(c):04x}" for c in key),
        "json-escaped-upper": "".join(f"\\u{ord(c):04X}" for c in key),
        "mixed": key[:3] + "".join(f"\\u{ord(c):04x}" for c in key[3:8]) + key[8:],
        "percent": "".join(f"%{ord(c):02X}" for c in key),
        "html": "".join(f"&#{ord(c)};" for c in key),
    }


@pytest.mark.parametrize("form", sorted(_forms(KEY)))
@pytest.mark.parametrize("offset", [0, 280, 290, 296])
def test_an_echoed_key_is_redacted_in_every_form_and_before_the_cut(server, form, offset):
    spelled = _forms(KEY)[form]
    # the raw body: the key starts near character 300, where the error is cut
    body = ("x" * offset + spelled + " tail").encode()
    server.script = lambda req: Reply(400, raw=body)
    with pytest.raises(LMMError) as info:
        backend(server).chat(ChatRequest("q?"))
    msg = str(info.value)
    assert "HTTP 400" in msg
    assert not _leaks(msg), msg
    # nor a prefix cut by the limit: the snippet never ends with the key's start
    assert not any(msg.endswith(KEY[:n]) or msg.endswith(KEY[:n] + "...") for n in range(2, len(KEY)))


def test_a_json_error_body_escaping_the_key_is_redacted(server):
    # a server echoing the Authorization header as JSON with \u escapes (json.dumps, ensure_ascii)
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
    for raw in ('{"error": "bad key ' + escaped + '"}', json.dumps({"error": "bad key " + escaped})):  # escaped once, twice
        server.script = lambda req, raw=raw: Reply(401, raw=raw.encode())
        with pytest.raises(LMMError) as info:
            backend(server).chat(ChatRequest("q?"))
        assert not _leaks(str(info.value)) and "***" in str(info.value), str(info.value)


def test_retried_errors_and_answers_that_echo_the_key_are_redacted(server):
    server.script = lambda req: Reply(500, raw=("e" * 295 + KEY).encode())
    with pytest.raises(LMMError) as info:
        backend(server, max_retries=1).chat(ChatRequest("q?"))
    assert not _leaks(str(info.value))
    server.script = lambda req: Reply(json=completion(f"your key is {KEY}"))
    answer = backend(server).chat(ChatRequest("q?"))
    assert not _leaks(answer.text) and "***" in answer.text


def test_redact_snippet_redacts_then_cuts():
    text = "a" * 290 + KEY
    assert not _leaks(redact_snippet(text, [KEY], 300))
    # the old order (cut, then redact) leaked the key's first ten characters
    assert KEY[:10] in redact(text[:300], [KEY])


# ------------------------------------------------------------ absurd logprobs


def _logprobs_reply(alternatives, chosen=("Yes", 0.0)):
    body = completion(chosen[0], [(chosen[0], chosen[1])])
    body["choices"][0]["logprobs"] = {"content": [{"token": chosen[0], "logprob": chosen[1], "top_logprobs": [{"token": t, "logprob": lp} for t, lp in alternatives]}]}
    return Reply(json=body)


ABSURD = {
    "positive": ([("Yes", 50.0), ("No", -3.0)], ("Yes", 50.0)),
    "duplicates": ([("Yes", -0.01)] * 100_000, ("Yes", -0.01)),
    "mass-over-one": ([("Yes", -0.1), (" yes", -0.1), ("YES", -0.2), ("No", -5.0)], ("Yes", -0.1)),
    "nan": ([("Yes", float("nan")), ("No", -3.0)], ("No", -3.0)),
    "infinity": ([("Yes", float("inf")), ("No", -3.0)], ("No", -3.0)),
}


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_absurd_logprobs_make_the_checker_abstain(server, photo, case):
    alternatives, chosen = ABSURD[case]
    reply = _logprobs_reply(alternatives, chosen)
    if case in ("nan", "infinity"):  # json.dumps writes NaN / Infinity, which Python's json (and so the client) reads
        reply = Reply(raw=json.dumps(reply.json).encode())
    server.script = lambda req: reply
    checker = ReflectionChecker(backend(server, timeout=30.0))
    r = checker.reflect(encode_image(photo), "cat")
    assert r.answer is not None and r.answer.method == "invalid" and r.answer.problem
    assert not r.answer.answered
    assert checker.vote_for(r, checker.config) is None  # no vote, let alone a full-confidence one


def test_sane_logprobs_still_vote(server, photo):
    server.script = lambda req: _logprobs_reply([("Yes", math.log(0.7)), ("No", math.log(0.25))], ("Yes", math.log(0.7)))
    checker = ReflectionChecker(backend(server))
    r = checker.reflect(encode_image(photo), "cat")
    v = checker.vote_for(r, checker.config)
    assert v is not None and v.support == pytest.approx(0.7 / 0.95) and v.confidence == pytest.approx(0.95)


# ------------------------------------------------------------ a dripping server


def _yes_body() -> bytes:
    return json.dumps(completion("Yes", [("Yes", -0.1), ("No", -2.4)])).encode()


def test_a_dripping_server_does_not_defeat_the_timeout(server):
    server.script = lambda req: Reply(raw=_yes_body(), drip_s=0.5)  # a byte every 0.5 s: ~3 minutes of body
    b = backend(server, timeout=2.0, max_retries=3)
    t0 = time.monotonic()
    with pytest.raises(LMMError, match="within 2 s"):
        b.chat(ChatRequest("q?"))
    assert time.monotonic() - t0 < 3.5  # a deadline for the whole call, retries included


def test_the_reflection_checker_returns_at_the_deadline_with_several_labels(server, photo):
    server.script = lambda req: Reply(raw=_yes_body(), drip_s=0.5)
    checker = ReflectionChecker(backend(server, timeout=1.5, max_retries=2))
    t0 = time.monotonic()
    outcomes = checker._ask_all(encode_image(photo), ["cat", "dog", "owl"], checker.config, None)
    assert time.monotonic() - t0 < 3.0
    assert all(isinstance(o, LMMError) for o in outcomes)


def _photo_file(tmp_path, photo):
    from PIL import Image

    path = tmp_path / "q.png"
    Image.fromarray(photo).save(path)
    return path


def _store_with_one_photo(tmp_path, photo):
    from consist import plugins
    from consist.records import Sample
    from consist.stores.uri import open_store

    path = _photo_file(tmp_path, photo)
    s = open_store(str(tmp_path / "s.db"))
    s.put([Sample("cat0", uri=str(path), label="cat", embedding=plugins.embedders()["tiny"].embed(photo))])
    s.close()
    return path


def _run_cli(args, env, timeout):
    import os
    import subprocess
    import sys

    full = {**os.environ, **env, "CONSIST_PLUGINS": "semantic"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, timeout=timeout, env=full)
    return proc, time.monotonic() - t0


def test_consist_ask_against_a_dripping_server_exits_at_the_deadline(server, photo, tmp_path):
    server.script = lambda req: Reply(raw=_yes_body(), drip_s=1.5)
    path = _store_with_one_photo(tmp_path, photo)
    env = {"CONSIST_LMM_BASE_URL": server.base_url, "CONSIST_LMM_MODEL": "m", "CONSIST_LMM_API_KEY": KEY, "CONSIST_LMM_TIMEOUT": "3"}
    proc, elapsed = _run_cli(["ask", str(path), "what is it?", "--store", str(tmp_path / "s.db")], env, timeout=60)
    assert elapsed < 20, elapsed  # start-up + the 3 s deadline, not minutes
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "within 3 s" in proc.stderr
    assert not _leaks(proc.stdout + proc.stderr)


# ------------------------------------------------------------ a dead server


def test_a_dead_server_opens_the_circuit_breaker():
    from consist_semantic.testing import dead_base_url

    b = OpenAIChatBackend(dead_base_url(), "m", KEY, max_retries=1, backoff_s=0.01, timeout=5.0, breaker_failures=2, breaker_cooldown_s=0.5)
    for _ in range(2):
        with pytest.raises(LMMError, match="connection failed"):
            b.chat(ChatRequest("q?"))
    assert b.calls == 4 and b.breaker_trips == 1
    t0 = time.monotonic()
    with pytest.raises(LMMError, match="circuit open: 2 calls in a row failed"):
        b.chat(ChatRequest("q?"))
    assert time.monotonic() - t0 < 0.05 and b.calls == 4 and b.breaker_refused == 1  # no request at all
    time.sleep(0.6)  # after the cool-down one call tries again
    with pytest.raises(LMMError, match="connection failed"):
        b.chat(ChatRequest("q?"))
    assert b.calls == 6


def test_a_server_that_recovers_closes_the_circuit(server):
    b = backend(server, breaker_failures=1, breaker_cooldown_s=0.2)
    server.script = lambda req: Reply(503, {"error": "down"})
    with pytest.raises(LMMError):
        b.chat(ChatRequest("q?"))
    with pytest.raises(LMMError, match="circuit open"):
        b.chat(ChatRequest("q?"))
    server.script = lambda req: Reply(json=completion("Yes"))
    time.sleep(0.25)
    assert b.chat(ChatRequest("q?")).text == "Yes"
    assert b.chat(ChatRequest("q?")).text == "Yes"  # closed again


def test_consist_tell_with_a_dead_lmm_falls_back_to_the_grammar(tmp_path):
    from consist.records import Sample
    from consist.stores.uri import open_store
    from consist_semantic.testing import dead_base_url

    s = open_store(str(tmp_path / "s.db"))
    s.put([Sample("a", label="cat")])
    s.close()
    env = {"CONSIST_LMM_BASE_URL": dead_base_url(), "CONSIST_LMM_MODEL": "m", "CONSIST_LMM_API_KEY": KEY, "CONSIST_LMM_TIMEOUT": "5"}
    proc, _ = _run_cli(["tell", "note: taken from the roof", "--sample", "a", "--store", str(tmp_path / "s.db"), "--yes"], env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "understood (grammar)" in proc.stdout and "the LMM failed" in proc.stdout and "--no-lmm" in proc.stdout
    assert "Traceback" not in proc.stderr and not _leaks(proc.stdout + proc.stderr)
    s = open_store(str(tmp_path / "s.db"))
    assert s.get("a").meta["notes"][0]["text"] == "taken from the roof"
    s.close()


def test_an_audit_against_a_dead_lmm_trips_the_breaker_and_says_so_in_the_summary(tmp_path):
    import sys
    from pathlib import Path

    pytest.importorskip("consist_spatial")
    from consist_semantic.testing import dead_base_url

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
    import audit_data

    root, _ = audit_data.build(tmp_path / "photos")
    env = {"CONSIST_LMM_BASE_URL": dead_base_url(), "CONSIST_LMM_MODEL": "m", "CONSIST_PLUGINS": "spatial,semantic"}
    import os
    import subprocess

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "consist.cli.main", "audit", str(root), "--out", str(out), "--workers", "1", "--no-report"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    lmm = summary["lmm"]
    assert lmm["failed"] >= 1 and lmm["refused_by_circuit_breaker"] >= 1, lmm


# ------------------------------------------------------------ bad configuration


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-3", "0"])
@pytest.mark.parametrize("command", ["ask", "tell"])
def test_a_bad_lmm_timeout_is_one_line_and_exit_2(server, photo, tmp_path, value, command):
    path = _store_with_one_photo(tmp_path, photo)
    env = {"CONSIST_LMM_BASE_URL": server.base_url, "CONSIST_LMM_MODEL": "m", "CONSIST_LMM_API_KEY": KEY, "CONSIST_LMM_TIMEOUT": value}
    store = str(tmp_path / "s.db")
    args = ["ask", str(path), "what is it?", "--store", store] if command == "ask" else ["tell", "note: hello", "--sample", "cat0", "--store", store, "--yes"]
    proc, _ = _run_cli(args, env, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "CONSIST_LMM_TIMEOUT" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not _leaks(proc.stdout + proc.stderr)


# ------------------------------------------------------------ ask --context-only is bounded


class _SlowPlugin:
    """A checker that takes a minute (a store-wide graph on a large store)."""

    class Slow:
        name = "slow_graph"
        cost = 0.5
        timeout = 300.0

        def check(self, prediction, neighbours, context):
            time.sleep(60)
            return []

    def __init__(self):
        import consist

        @consist.hookimpl
        def consist_register_checkers(register):
            register(self.Slow())

        self.consist_register_checkers = consist_register_checkers


def test_ask_context_only_is_bounded_by_the_time_limit(photo, tmp_path):
    from consist import plugins
    from consist.stores.uri import open_store
    from consist_semantic.grounded import ask

    path = _store_with_one_photo(tmp_path, photo)
    plugins.get_plugin_manager().register(_SlowPlugin(), name="slow-test-plugin")
    assert "slow_graph" in plugins.checkers()
    s = open_store(str(tmp_path / "s.db"))
    try:
        t0 = time.monotonic()
        result = ask(s, str(path), "what is it?", backend=None, checkers=["slow_graph"], time_limit=1.0)
        assert time.monotonic() - t0 < 8.0  # seconds, not the checker's 300 s (nor its minute)
    finally:
        s.close()
    assert result.answer is None and any(i.startswith("slow_graph:") for i in result.incomplete), result.incomplete


@pytest.mark.parametrize("value", ["0", "-1", "nan", "abc"])
def test_ask_refuses_a_bad_time_limit(photo, tmp_path, value):
    path = _store_with_one_photo(tmp_path, photo)
    proc, _ = _run_cli(["ask", str(path), "q?", "--store", str(tmp_path / "s.db"), "--context-only", "--time-limit", value], {}, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "time-limit" in proc.stderr


def test_ask_context_only_prints_no_log_warning_for_an_incomplete_verification(photo, tmp_path):
    path = _store_with_one_photo(tmp_path, photo)
    proc, _ = _run_cli(["ask", str(path), "q?", "--store", str(tmp_path / "s.db"), "--context-only", "--json"], {}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "incomplete" in data and "verification_incomplete" not in proc.stderr
