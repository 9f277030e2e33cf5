"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1: logprobs
present or absent, odd tokenisations, errors, slow answers, malformed JSON,
401/429/500, retries and redaction of the API key."""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from PIL import Image

from consist_semantic import ChatRequest, LMMError, OpenAIChatBackend, ReflectionChecker, ReflectionConfig, encode_image
from consist_semantic.testing import Reply, completion, text_reply, yes_no_reply

KEY = "sk-test-0123456789abcdef"


def backend(server, **kw):
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout", 5.0)
    return OpenAIChatBackend(server.base_url, "scripted-vlm", KEY, **kw)


def ask(checker, image, label="cat"):
    return checker.reflect(encode_image(image), label)


def test_request_carries_image_question_and_forced_one_token(server, photo):
    checker = ReflectionChecker(backend(server))
    r = ask(checker, photo, "cat")
    req = server.requests[-1]
    assert req.path == "/v1/chat/completions"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    body = req.body
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert req.prompt == "Does the picture show a cat? Answer yes or no."
    (url,) = req.image_urls
    assert url.startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert max(sent.size) <= 768 and sent.size[0] > sent.size[1]  # chelsea is landscape
    assert r.answer.p_yes == pytest.approx(0.9) and r.answer.coverage == pytest.approx(0.98)


def test_odd_tokenisations_are_summed(server, photo):
    server.script = lambda req: yes_no_reply(0.7, coverage=0.9, yes=("Yes", " yes", "▁YES", "Y"), no=("No", "Ġno"))
    r = ask(ReflectionChecker(backend(server)), photo)
    assert r.answer.p_yes == pytest.approx(0.7) and r.answer.coverage == pytest.approx(0.9)


def test_low_coverage_abstains(server, photo):
    server.script = lambda req: yes_no_reply(0.9, coverage=0.3, other="<think>")
    checker = ReflectionChecker(backend(server))
    r = ask(checker, photo)
    assert r.answer.coverage == pytest.approx(0.3)
    assert checker.vote_for(r, checker.config) is None
    # with a lower bar it votes, weighted by its coverage
    v = checker.vote_for(r, ReflectionConfig(min_coverage=0.2))
    assert v.support == pytest.approx(0.9) and v.confidence == pytest.approx(0.3)


def test_no_logprobs_falls_back_to_text(server, photo):
    server.script = lambda req: text_reply("No.")
    checker = ReflectionChecker(backend(server))
    r = ask(checker, photo)
    assert r.answer.method == "text" and r.answer.p_yes == 0.0
    v = checker.vote_for(r, checker.config)
    assert v.support == pytest.approx(0.15) and v.confidence == pytest.approx(0.5)
    server.script = lambda req: text_reply("I think it shows a dog")
    r2 = ask(checker, photo, "dog")
    assert r2.answer is None and checker.vote_for(r2, checker.config) is None


def test_support_is_clipped(server, photo):
    server.script = lambda req: yes_no_reply(1.0, coverage=1.0)
    checker = ReflectionChecker(backend(server))
    v = checker.vote_for(ask(checker, photo), checker.config)
    assert v.support == pytest.approx(0.99) and v.confidence == pytest.approx(1.0)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retryable_statuses_are_retried_then_succeed(server, photo, status):
    seen = []

    def script(req):
        seen.append(1)
        if len(seen) < 3:
            return Reply(status, {"error": {"message": "busy"}}, headers={"Retry-After": "0.01"} if status == 429 else {})
        return yes_no_reply(0.2)

    server.script = script
    b = backend(server, max_retries=3)
    r = ReflectionChecker(b).reflect(encode_image(photo), "cat")
    assert len(seen) == 3 and b.calls == 3
    assert r.answer.p_yes == pytest.approx(0.2)


def test_retries_are_bounded(server, photo):
    server.script = lambda req: Reply(500, {"error": "boom"})
    b = backend(server, max_retries=2)
    with pytest.raises(LMMError, match="failed after 3 attempts: HTTP 500"):
        b.chat(ChatRequest("q?", (encode_image(photo),)))
    assert len(server.requests) == 3


def test_backoff_grows(server):
    server.script = lambda req: Reply(503, {"error": "down"})
    b = backend(server, max_retries=3, backoff_s=0.05)
    t0 = time.perf_counter()
    with pytest.raises(LMMError):
        b.chat(ChatRequest("q?"))
    # waits ~0.05 + 0.1 + 0.2 (+-20 %) between the four attempts
    assert 0.25 < time.perf_counter() - t0 < 2.0


def test_401_is_not_retried_and_the_key_is_redacted(server):
    server.script = lambda req: Reply(401, {"error": {"message": f"invalid key {req.headers.get('Authorization')}"}})
    b = backend(server, max_retries=3)
    with pytest.raises(LMMError) as info:
        b.chat(ChatRequest("q?"))
    assert len(server.requests) == 1
    msg = str(info.value)
    assert "HTTP 401" in msg and KEY not in msg and "***" in msg
    assert KEY not in repr(b) and "***" in repr(b)


def test_key_never_reaches_the_logs(server, capsys):
    from consist.logs import configure_logging

    configure_logging("DEBUG", json=True)
    try:
        server.script = lambda req: Reply(500, {"echo": req.headers.get("Authorization")})
        with pytest.raises(LMMError):
            backend(server, max_retries=1).chat(ChatRequest("q?"))
        err = capsys.readouterr().err
    finally:
        with capsys.disabled():
            configure_logging("WARNING")
    assert "lmm_retry" in err and KEY not in err


def test_malformed_json_is_retried_then_reported(server):
    server.script = lambda req: Reply(200, raw=b"{not json")
    b = backend(server, max_retries=1)
    with pytest.raises(LMMError, match="malformed JSON"):
        b.chat(ChatRequest("q?"))
    assert len(server.requests) == 2
    server.script = lambda req: Reply(200, {"choices": []})
    with pytest.raises(LMMError, match="without choices"):
        b.chat(ChatRequest("q?"))


def test_slow_answers_time_out_at_the_deadline_and_fast_failures_are_retried_within_it(server):
    calls = []

    def script(req):
        calls.append(1)
        return yes_no_reply(0.6, coverage=1.0) if len(calls) > 1 else Reply(500, {"error": "busy"})

    server.script = script
    b = backend(server, timeout=2.0, max_retries=1)
    answer = b.chat(ChatRequest("q?"))
    assert answer.chosen is not None and len(calls) == 2  # a quick failure is retried within the deadline
    server.script = lambda req: Reply(json=completion("Yes"), delay_s=2.0)
    b = backend(server, timeout=0.3, max_retries=3)
    t0 = time.perf_counter()
    with pytest.raises(LMMError, match="within 0.3 s"):
        b.chat(ChatRequest("q?"))
    assert time.perf_counter() - t0 < 1.0  # the time-out is a deadline for the whole call: no retry after it


def test_concurrency_is_limited(server):
    live = []
    peak = []
    lock = threading.Lock()

    def script(req):
        with lock:
            live.append(1)
            peak.append(len(live))
        time.sleep(0.05)
        with lock:
            live.pop()
        return yes_no_reply(0.5)

    server.script = script
    b = backend(server, max_concurrency=2)
    threads = [threading.Thread(target=b.chat, args=(ChatRequest(f"q{i}?"),)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(server.requests) == 6 and max(peak) == 2


def test_connection_refused_is_an_lmm_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    b = OpenAIChatBackend(f"http://127.0.0.1:{port}/v1", "m", backoff_s=0.01, max_retries=1)
    with pytest.raises(LMMError, match="connection failed"):
        b.chat(ChatRequest("q?"))


def test_hosted_openai_gets_no_unknown_fields():
    b = OpenAIChatBackend("https://api.openai.com/v1", "gpt-4o-mini", KEY)
    assert "chat_template_kwargs" not in b.body(ChatRequest("q?"))


@pytest.mark.parametrize("bad", ["", "ftp://x/v1", "localhost:8000"])
def test_bad_base_url(bad):
    with pytest.raises(ValueError):
        OpenAIChatBackend(bad, "m")


def test_a_keep_alive_connection_closed_by_the_server_is_reopened_without_a_retry(server):
    server.script = lambda req: Reply(json=completion("Yes", [("Yes", -0.1)]), close_after=True)
    b = backend(server, max_retries=0, backoff_s=5.0)  # a counted retry would fail or wait 5 s
    t0 = time.perf_counter()
    for _ in range(3):
        assert b.chat(ChatRequest("q?")).text == "Yes"
    assert len(server.requests) == 3 and time.perf_counter() - t0 < 2.0
    assert b.calls == 5  # 3 questions + 2 reconnections after the server closed the idle connection
