"""``consist review AUDIT_DIR``: the local review web app (see docs/review.md)."""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from pathlib import Path
from typing import Any

import click

from consist.cli.common import fail, json_option, open_store_or_fail, safe

#: Port tried first; the next free ones follow when it is taken (``--port`` insists).
DEFAULT_PORT = 8765
#: Ports tried after the default one before giving up.
PORT_TRIES = 20


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int | None) -> socket.socket:
    """A listening socket: ``port`` exactly, or the first free of DEFAULT_PORT.. ."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [port] if port is not None else [DEFAULT_PORT + i for i in range(PORT_TRIES)]
    last: OSError | None = None
    for p in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, p))
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            fail(f"{host}:{p}: cannot listen ({exc.strerror or exc})")
        sock.listen(128)
        sock.set_inheritable(True)
        return sock
    if port is not None:
        fail(f"port {port} on {host} is in use ({last.strerror if last else 'taken'}); choose another with --port, or leave --port out to take a free one")
    fail(f"no free port from {DEFAULT_PORT} to {DEFAULT_PORT + PORT_TRIES - 1} on {host}; give one with --port")


@click.command("review")
@click.argument("audit_dir", type=click.Path(path_type=Path))
@click.option("--store", "store_uri", default=None, help="The store to review (default: the one the audit used, from summary.json).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (anything but a loopback address exposes the token-protected app to the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=f"Port (default: {DEFAULT_PORT}, or the next free one; 0: any free port).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; just print the address.")
@click.option("--token", default=None, help="The session token writes must carry (default: a new random one; for scripts calling the API).")
@json_option
def review_command(audit_dir: Path, store_uri: str | None, host: str, port: int | None, no_browser: bool, token: str | None, as_json: bool) -> None:
    """Review an audit in the browser: the queue (flagged first), each sample with its
    verified neighbours, match lines and outlines; accept or reject suggestions,
    relabel, draw where the object is, say what is wrong in words; search the store
    by an image region. Every action is a store history entry (consist undo reverts
    it; consist export writes the labels). Ctrl-C stops the server.

    With --json, one line {"url", "open", "token", "store", "audit", "samples"} is
    printed once the server listens (for scripts; "open" is the address with the
    token), then the server runs until stopped.
    """
    try:
        import uvicorn

        from consist.review.server import ReviewSession, create_app
    except ImportError as exc:
        fail(f"consist review needs FastAPI and uvicorn ({exc.name} is missing): pip install 'consist[review]'")
    if not audit_dir.is_dir():
        fail(f"{audit_dir}: no such folder; consist review takes the output folder of an audit (consist audit IMAGES --out {audit_dir})")
    if store_uri is None:
        import json

        try:
            store_uri = str(json.loads((audit_dir / "summary.json").read_text(encoding="utf-8"))["store"])
        except FileNotFoundError:
            fail(f"{audit_dir}: not an audit folder (no summary.json); consist review takes the --out folder of consist audit (consist audit IMAGES --out AUDIT_DIR)")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"{audit_dir / 'summary.json'}: cannot read the audit's store from it ({exc}); give --store")
    if token is not None and len(token) < 16:
        fail("--token must be at least 16 characters")
    store = open_store_or_fail(store_uri)
    try:
        sock = _bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        allowed = {f"{shown}:{bound}", f"127.0.0.1:{bound}", f"localhost:{bound}", f"[::1]:{bound}"}
        session = ReviewSession(audit_dir, store, token=token, allowed_hosts=tuple(sorted(allowed)))
        app = create_app(session)
        url = f"http://{shown}:{bound}/"
        full = f"{url}#token={session.token}"
        if as_json:
            import json

            # one line, flushed: a script reads it with readline() once the server listens
            click.echo(json.dumps({"url": url, "open": full, "token": session.token, "store": store.uri, "audit": str(audit_dir), "samples": len(session.index)}, ensure_ascii=False))
        else:
            click.echo(f"reviewing {safe(audit_dir)} ({len(session.index)} samples; store {safe(store.uri)})")
            if not _is_loopback(host):
                click.echo(f"warning: listening on {safe(host)}: anyone who can reach it can read the audit's images; writes still need the token", err=True)
            click.echo(f"open {full}   (Ctrl-C stops)")
        if not no_browser:
            import webbrowser

            threading.Timer(0.5, lambda: webbrowser.open(full)).start()
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM re-raised once uvicorn has shut down: the normal way to stop a server
            pass
        if not as_json:
            click.echo("stopped (every action is in the store: consist history --store " + safe(store.uri) + ")")
    finally:
        store.close()


def register(group: Any) -> None:
    group.add_command(review_command)
