"""An OpenAI-compatible chat-completions client (standard library only).

Works with vLLM, llama.cpp server, Ollama (``/v1``) and hosted APIs. Why not the
``openai`` package: one endpoint is all we use, and the standard library keeps the
plugin light and its behaviour (retries, time-outs, redaction) ours to test.

Robustness, each a named parameter:

* ``timeout`` (60 s): a deadline for the whole call, retries and back-off
  included. It is not a per-read socket time-out (a server dripping one byte a
  second would defeat that): when the deadline passes, the socket is shut down
  under the blocked read, and no retry starts after it;
* ``max_retries`` (3) on connection errors, time-outs, HTTP 429 and 5xx and
  malformed bodies, with exponential back-off (``backoff_s`` 0.5 s doubling, up to
  ``max_backoff_s`` 20 s, +-20 % jitter; ``Retry-After`` is honoured up to the same
  cap), within the deadline; 400/401/403/404 are not retried;
* a circuit breaker: after ``breaker_failures`` (3) calls in a row failed (retries
  exhausted, or the key refused), calls fail at once, without a request, for
  ``breaker_cooldown_s`` (30 s); then one call tries again (success closes it). A
  dead server costs three calls per process, not four attempts per decision for the
  whole run; ``breaker_refused`` counts the calls it spared;
* ``max_concurrency`` (4) requests in flight per back-end, whatever the number of
  threads asking (a local vLLM batches them; a hosted API rate-limits beyond);
* one keep-alive connection per thread (a connection the server closed while idle
  is reopened at once, without counting as a retry);
* the API key goes only into the ``Authorization`` header: ``repr``, logs and
  error messages redact it (even when a server echoes it back).

"Thinking" modes are turned off (a reasoning model would spend its one token on
``<think>``): ``chat_template_kwargs={"enable_thinking": false}`` is sent, which
vLLM and llama.cpp server pass to the chat template (Qwen3, and others that read it)
and other servers ignore; ``thinking="omit"`` leaves it out for strict hosted APIs
(api.openai.com rejects unknown fields and gets ``omit`` automatically).
"""

from __future__ import annotations

import http.client
import json
import math
import random
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import structlog

from consist_semantic.chat import ChatAnswer, ChatRequest, LMMError
from consist_semantic.redact import mask, redact, redact_snippet
from consist_semantic.yesno import top_from_openai

__all__ = ["RETRY_STATUS", "OpenAIChatBackend"]

log = structlog.get_logger("consist.semantic.openai")

#: HTTP statuses worth retrying: rate limit and server-side failures.
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIChatBackend:
    """Chat completions over HTTP(S) to ``{base_url}/chat/completions``."""

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        max_concurrency: int = 4,
        thinking: str = "auto",
        extra_body: dict[str, Any] | None = None,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 30.0,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required (e.g. http://127.0.0.1:8000/v1)")
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port]/path, got {base_url!r}")
        if thinking not in ("auto", "off", "omit"):
            raise ValueError(f"thinking must be auto, off or omit, got {thinking!r}")
        if max_retries < 0 or max_concurrency < 1 or not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("max_retries >= 0, max_concurrency >= 1 and a finite timeout > 0 are required")
        self.base_url = base_url.rstrip("/")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._path = (parts.path or "") + "/chat/completions"
        self.model = model or "default"
        self._api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_concurrency = int(max_concurrency)
        if thinking == "auto":
            thinking = "omit" if parts.hostname.endswith("openai.com") else "off"
        self.thinking = thinking
        self.extra_body = dict(extra_body or {})
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._local = threading.local()
        self.calls = 0  # HTTP requests sent (retries included)
        self.breaker_failures = int(breaker_failures)  # 0: no breaker
        self.breaker_cooldown_s = float(breaker_cooldown_s)
        self._breaker_lock = threading.Lock()
        self._failed_in_a_row = 0
        self._open_until = 0.0
        self._last_failure = ""
        self.breaker_trips = 0  # times the circuit opened
        self.breaker_refused = 0  # calls failed at once while it was open

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(base_url={self.base_url!r}, model={self.model!r}, api_key={mask(self._api_key)})"

    # ------------------------------------------------------------------ request

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body sent for ``request`` (public for tests and debugging)."""
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        for img in request.images:
            content.append({"type": "image_url", "image_url": {"url": img.data_url()}})
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "n": 1,
            "stream": False,
        }
        if request.top_logprobs > 0:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
        if request.json_mode:
            body["response_format"] = {"type": "json_object"}
        if self.thinking == "off":
            body["chat_template_kwargs"] = {"enable_thinking": False}
        body.update(self.extra_body)
        return body

    def _connection(self, remaining: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=remaining)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stall on small requests
            self._local.conn = conn
        elif conn.sock is not None:
            conn.sock.settimeout(remaining)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def _redact(self, text: str) -> str:
        return redact(text, [self._api_key])

    def _post_once(self, payload: bytes, deadline: float) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        reused = getattr(self._local, "conn", None) is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Retryable(f"no answer within {self.timeout:g} s")
        expired = threading.Event()
        conn: http.client.HTTPConnection | None = None

        def cut() -> None:  # the deadline: abort whatever read or write is blocked
            expired.set()
            sock = None if conn is None else conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(remaining, cut)
        timer.daemon = True  # never keeps the process alive
        try:
            conn = self._connection(remaining)
            timer.start()
            conn.request("POST", self._path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except TimeoutError as exc:
            self._drop_connection()
            raise _Retryable(f"no answer within {self.timeout:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            if expired.is_set():
                raise _Retryable(f"no complete answer within {self.timeout:g} s (the server was still sending)") from exc
            if reused and isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                # the server closed an idle keep-alive connection (uvicorn: after 5 s):
                # not a failure, reconnect at once (the new connection is not reused)
                timer.cancel()
                self.calls += 1
                return self._post_once(payload, deadline)
            raise _Retryable(f"connection failed: {type(exc).__name__}: {exc}") from exc
        finally:
            timer.cancel()
        if expired.is_set():  # the read ended exactly as the deadline cut the socket
            self._drop_connection()
            raise _Retryable(f"no complete answer within {self.timeout:g} s (the server was still sending)")
        if resp.getheader("Connection", "").lower() == "close":
            self._drop_connection()
        status = resp.status
        # redact the body first, then cut it: a key cut in two would leak its first part
        snippet = redact_snippet(raw[:65536].decode("utf-8", "replace"), [self._api_key], 300)
        if status in RETRY_STATUS:
            after = resp.getheader("Retry-After")
            try:
                retry_after = float(after) if after is not None else None
            except ValueError:
                retry_after = None
            raise _Retryable(f"HTTP {status}: {snippet}", retry_after)
        if status in (401, 403):
            raise LMMError(f"{self.base_url}: HTTP {status}: the server refused the API key (set CONSIST_LMM_API_KEY): {snippet}")
        if status >= 300:
            raise LMMError(f"{self.base_url}: HTTP {status}: {snippet}")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise _Retryable(f"malformed JSON in the answer ({exc}): {snippet}") from exc
        if not isinstance(data, dict):
            raise _Retryable(f"malformed JSON in the answer (not a JSON object): {snippet}")
        return data

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        deadline = time.monotonic() + self.timeout  # for the whole call, retries included
        last = ""
        attempts = 0
        for attempt in range(self.max_retries + 1):
            if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                last = last or f"no free request slot within {self.timeout:g} s ({self.max_concurrency} in flight)"
                break
            try:
                self.calls += 1
                attempts += 1
                return self._post_once(payload, deadline)
            except _Retryable as exc:
                last = str(exc)
                wait = exc.retry_after
            finally:
                self._slots.release()
            left = deadline - time.monotonic()
            if attempt == self.max_retries or left <= 0:
                break
            if wait is None:
                wait = self.backoff_s * (2**attempt) * random.uniform(0.8, 1.2)
            wait = min(max(0.0, wait), self.max_backoff_s)
            if wait >= left:  # the next attempt could not start before the deadline
                break
            log.warning("lmm_retry", base_url=self.base_url, model=self.model, attempt=attempt + 1, wait_s=round(wait, 3), error=last)
            time.sleep(wait)
        raise LMMError(self._redact(f"{self.base_url}: failed after {attempts} attempt{'s' if attempts != 1 else ''}: {last}"))

    # ------------------------------------------------------------------- answer

    # ----------------------------------------------------------- circuit breaker

    def _breaker_check(self) -> None:
        with self._breaker_lock:
            left = self._open_until - time.monotonic()
            if left <= 0:
                return
            self.breaker_refused += 1
            n, last = self._failed_in_a_row, self._last_failure
        raise LMMError(f"{self.base_url}: circuit open: {n} calls in a row failed (last: {last}); not asking again for {left:.0f} s")

    def _breaker_record(self, error: str | None) -> None:
        with self._breaker_lock:
            if error is None:
                self._failed_in_a_row, self._open_until = 0, 0.0
                return
            self._failed_in_a_row += 1
            self._last_failure = error[-200:]
            if self.breaker_failures and self._failed_in_a_row >= self.breaker_failures:
                if self._open_until <= time.monotonic():
                    self.breaker_trips += 1
                    log.warning("lmm_circuit_open", base_url=self.base_url, failures=self._failed_in_a_row, cooldown_s=self.breaker_cooldown_s, error=self._last_failure)
                self._open_until = time.monotonic() + self.breaker_cooldown_s

    def chat(self, request: ChatRequest) -> ChatAnswer:
        self._breaker_check()
        try:
            data = self._post(self.body(request))
        except LMMError as exc:
            msg = str(exc)
            # the server is unreachable, failing or refusing the key: count it; a
            # request it rejected (400, 404: this request's fault) is not the server's
            if "failed after" in msg or "HTTP 401" in msg or "HTTP 403" in msg:
                self._breaker_record(msg)
            raise
        self._breaker_record(None)
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content") or ""
            if isinstance(text, list):  # some servers return content parts
                text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LMMError(f"{self.base_url}: answer without choices[0].message: {redact_snippet(json.dumps(data), [self._api_key], 200)}") from exc
        parsed = top_from_openai(choice.get("logprobs"))
        top, chosen = (None, None) if parsed is None else (tuple(parsed[0]), parsed[1])
        # an answer that echoes the key is shown redacted like an error (it may be printed)
        return ChatAnswer(text=self._redact(str(text)), top_logprobs=top, chosen=chosen, model=self._redact(str(data.get("model") or self.model)))
