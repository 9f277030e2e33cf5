"""A real OpenAI-compatible HTTP server on 127.0.0.1 whose answers a script decides.

Used by the tests and the benchmark (and by plugin authors testing against
consist-semantic): it speaks the chat-completions protocol over a real socket, so
the client's time-outs, retries, headers and JSON handling are exercised for real.

    with ScriptedServer(lambda body: yes_no_reply(0.8)) as server:
        backend = OpenAIChatBackend(server.base_url, "scripted")

A script receives the request (:class:`Request`: parsed JSON body, headers, path)
and returns a :class:`Reply` (status, JSON or raw body, headers, delay before
answering). The server records every request (``server.requests``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import attrs

__all__ = ["Reply", "Request", "ScriptedServer", "completion", "dead_base_url", "question_label", "text_reply", "yes_no_reply"]


@attrs.frozen
class Request:
    path: str
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or the raw text when it did not parse

    @property
    def prompt(self) -> str:
        """The text of the last user message."""
        try:
            content = self.body["messages"][-1]["content"]
        except (KeyError, IndexError, TypeError):
            return ""
        if isinstance(content, str):
            return content
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")

    @property
    def image_urls(self) -> list[str]:
        try:
            content = self.body["messages"][-1]["content"]
        except (KeyError, IndexError, TypeError):
            return []
        if isinstance(content, str):
            return []
        return [p["image_url"]["url"] for p in content if isinstance(p, dict) and p.get("type") == "image_url"]


@attrs.frozen
class Reply:
    status: int = 200
    json: Any = None
    raw: bytes | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay_s: float = 0.0
    close_after: bool = False  # close the connection after answering, without saying so (an idle keep-alive time-out)
    drip_s: float = 0.0  # send the body one byte at a time, this many seconds apart (a socket time-out per read never fires)


def completion(text: str, top: Sequence[tuple[str, float]] | None = None, *, chosen: tuple[str, float] | None = None, model: str = "scripted") -> dict[str, Any]:
    """A chat-completion body; ``top`` = ``(token, logprob)`` alternatives of the
    first token (``None``: no ``logprobs`` field, as servers without them answer)."""
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
    if top is not None:
        first = chosen or (top[0] if top else (text, 0.0))
        choice["logprobs"] = {"content": [{"token": first[0], "logprob": first[1], "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


def yes_no_reply(p_yes: float, *, coverage: float = 0.98, yes: Sequence[str] = ("Yes",), no: Sequence[str] = ("No",), logprobs: bool = True, other: str = "The") -> Reply:
    """A one-token answer whose yes/no mass is ``coverage``, split ``p_yes`` : ``1-p_yes``,
    each side spread evenly over the given spellings; the rest goes to ``other``."""
    py, pn = coverage * p_yes, coverage * (1 - p_yes)
    top: list[tuple[str, float]] = []
    for group, mass in ((yes, py), (no, pn)):
        for tok in group:
            if mass > 0:
                top.append((tok, math.log(mass / len(group))))
    if coverage < 1:
        top.append((other, math.log(1 - coverage)))
    top.sort(key=lambda t: -t[1])
    text = top[0][0] if top else "No"
    return Reply(json=completion(text, top if logprobs else None))


def dead_base_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (a port bound, then closed):
    every connection is refused, as with a server that died."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def text_reply(text: str) -> Reply:
    return Reply(json=completion(text, None))


def question_label(prompt: str) -> str | None:
    """The label of a reflection question built from the default template."""
    import re

    m = re.search(r"show (?:an? |the )?(.+?)\?", prompt)
    return m.group(1) if m else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode("utf-8", "replace")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        req = Request(self.path, dict(self.headers.items()), body)
        with self.server.lock:
            self.server.requests.append(req)
        try:
            reply = self.server.script(req)
        except Exception as exc:
            reply = Reply(500, {"error": {"message": f"script failed: {exc}"}})
        if reply.delay_s:
            time.sleep(reply.delay_s)
        data = reply.raw if reply.raw is not None else json.dumps(reply.json).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if reply.drip_s > 0:
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    if self.server.stopping.wait(reply.drip_s):
                        break
            else:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out)
            pass
        if reply.close_after:
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    script: Callable[[Request], Reply]
    requests: list[Request]
    lock: threading.Lock
    stopping: threading.Event


class ScriptedServer:
    """Context manager: a chat-completions server on ``127.0.0.1:<free port>``."""

    def __init__(self, script: Callable[[Request], Reply]) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.script = script
        self._server.requests = []
        self._server.lock = threading.Lock()
        self._server.stopping = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-lmm", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]  # = server_address once bound, typed (str, int)
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[Request]:
        return self._server.requests

    @property
    def script(self) -> Callable[[Request], Reply]:
        return self._server.script

    @script.setter
    def script(self, fn: Callable[[Request], Reply]) -> None:
        self._server.script = fn

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
