"""A real, throw-away PostgreSQL server for tests and benchmarks.

Why a real server and not a mock: the PostgreSQL store's guarantees (no lost history
entry under concurrent writers, the trust rules under row locks, one atomic commit per
``transaction()``) are properties of the server's locking and transactions; a mock
would only test our assumptions about them.

:func:`start_server` runs Debian's binaries (``/usr/lib/postgresql/<version>/bin``:
``initdb``, then ``postgres`` in the foreground as our child) from a temporary folder,
on a free ``127.0.0.1`` port with its unix socket in that folder, ``fsync=off`` (a test
cluster needs no power-loss durability). initdb refuses to run as root, so when the
tests run as root the cluster belongs to the ``postgres`` OS user. The server is the
child of this process with a parent-death signal: it stops when :meth:`PgServer.stop`
is called and also when this process dies without calling it.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["PgServer", "find_bindir", "start_server"]


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL server's ``bin`` folder, or ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if not found:
        exe = shutil.which("initdb")
        return Path(exe).parent if exe and (Path(exe).parent / "postgres").exists() else None
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel to send SIGINT (fast shutdown) to the server when we die."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


class PgServer:
    """A running throw-away server; :meth:`create_database` gives each test its own DB."""

    def __init__(self, root: Path, port: int, proc: subprocess.Popen[bytes], user: str) -> None:
        self.root, self.port, self.proc, self.user = root, port, proc, user

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def uri(self, database: str, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}" + (f"?{query}" if query else "")

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}", autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database and return its URI."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        """Fast shutdown (clients disconnected), then the folder is removed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server(timeout: float = 60.0) -> PgServer:
    """Initialise and start a cluster; raises ``RuntimeError`` with the server log
    when it does not come up (``FileNotFoundError`` when no binaries are installed)."""
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (Debian: apt-get install postgresql)")
    as_root = os.geteuid() == 0
    # as root, the postgres user must reach the folder: /tmp, not a $TMPDIR under /root
    root = Path(tempfile.mkdtemp(prefix="consist-pg-", dir="/tmp" if as_root and os.path.isdir("/tmp") else None))
    run_as: dict[str, object] = {}
    if as_root:  # initdb refuses root: the cluster belongs to the postgres user
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    data = root / "data"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        capture_output=True, text=True, env=env, cwd=root, **run_as,  # type: ignore[arg-type]
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-2000:]}")
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes it while it runs
    settings = ["listen_addresses=127.0.0.1", f"unix_socket_directories={root}", "fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200", "shared_buffers=64MB"]
    args = [str(bindir / "postgres"), "-D", str(data), "-p", str(port)]
    for s in settings:
        args += ["-c", s]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, preexec_fn=_die_with_parent, **run_as)  # type: ignore[call-overload]
    log.close()
    server = PgServer(root, port, proc, "postgres")
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(server.dsn, connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (root / "server.log").read_text(errors="replace")[-2000:]
                server.stop()
                raise RuntimeError(f"the PostgreSQL server did not start: {text}") from None
            time.sleep(0.1)
