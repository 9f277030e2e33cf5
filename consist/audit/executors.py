"""Where the audit's tasks run: this process, local worker processes, or a Dask cluster.

An executor maps a module-level function over tasks and yields the results as they
finish (unordered), keeping at most a few tasks in flight per worker so that memory
stays bounded however large the dataset. Tasks and results are plain picklable
values; workers open the store themselves (by URI), so on a cluster the audit's
output folder (or the ``--store``) must be on a file system the workers see, as
with any dask-jobqueue / dask-kubernetes deployment.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Protocol

from consist.errors import ConsistError

__all__ = ["IN_FLIGHT_PER_WORKER", "DaskExecutor", "Executor", "InlineExecutor", "LocalExecutor", "available_cores", "check_executor_spec", "make_executor", "sigterm_as_interrupt"]

#: Tasks queued per worker: enough to keep every worker busy, few enough that an
#: interrupted run has little work in flight and results do not pile up in memory.
IN_FLIGHT_PER_WORKER = 2


class Executor(Protocol):
    """Where tasks run. ``results_via_store``: the workers write what they compute to
    the shared store and return sample ids only (a cluster: payloads never travel
    through the scheduler to the parent); otherwise they return the payloads and the
    parent writes them."""

    name: str
    workers: int
    results_via_store: bool

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Runs every task in this process, in order (one core; tests and debugging)."""

    name = "inline"
    workers = 1
    results_via_store = False

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)

    def close(self) -> None:
        pass


#: Environment variables that size the thread pools of numpy's BLAS and OpenMP.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


#: Seconds between a worker's checks that its parent is alive.
PARENT_POLL_S = 0.5


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_as_interrupt() -> None:
    """Make SIGTERM shut this process down like Ctrl-C (``KeyboardInterrupt``: the
    interrupted-run message, exit 130, worker processes stopped), unless someone
    installed their own SIGTERM handler. Only from the main thread."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _die_with_parent(parent_pid: int, pdeathsig: bool) -> None:
    """A worker never outlives the process that started it.

    Linux: the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``; only
    when the pool was started by the parent's main thread, since the signal follows
    the *thread* that forked). Everywhere: a daemon thread polls the parent's pid and
    exits the worker when it changed (the parent died: kill -9 included).
    """
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl: the watchdog below suffices
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            threading.Event().wait(PARENT_POLL_S)

    threading.Thread(target=watch, name="consist-parent-watchdog", daemon=True).start()


def _worker_init(parent_pid: int, pdeathsig: bool) -> None:
    """Worker initialiser: die with the parent; Ctrl-C is the parent's to handle (it
    stops the workers), so a terminal's SIGINT to the whole process group does not
    print a traceback per worker; OpenCV's own thread pool to one thread."""
    _die_with_parent(parent_pid, pdeathsig)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _single_threaded_worker()


def _single_threaded_worker() -> None:
    """OpenCV's own thread pool to one thread (see ``_get_pool``)."""
    if os.environ.get("OMP_NUM_THREADS") == "1":
        try:
            import cv2

            cv2.setNumThreads(1)
        except ImportError:  # no OpenCV (consist-spatial not installed): nothing to limit
            pass


_MAIN_LOCK = threading.Lock()


def _spawn_without_main(process_obj: Any) -> Any:
    """Start a spawned process without the parent's ``__main__`` script.

    ``spawn`` re-imports the parent's main script in every child (as
    ``__mp_main__``) so that functions defined there can be unpickled. The workers
    never need it (their tasks are consist's own functions, their checkers come
    from the plugins), and a script that calls ``consist.audit(...)`` without an
    ``if __name__ == "__main__":`` guard would run the audit again in each worker,
    which then tries to start workers of its own (BrokenProcessPool). With the
    main module's file and spec hidden while the child is started, the child
    imports nothing of it: a plain script works like a notebook.
    """
    main: Any = sys.modules.get("__main__")
    with _MAIN_LOCK:
        if main is None:
            return SpawnProcess._Popen(process_obj)
        saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
        try:
            if "__file__" in saved:
                del main.__file__
            main.__spec__ = None
            return SpawnProcess._Popen(process_obj)
        finally:
            for name in ("__file__", "__spec__"):
                if name in saved:
                    setattr(main, name, saved[name])
                elif hasattr(main, name):
                    delattr(main, name)


class _NoMainSpawnProcess(SpawnProcess):
    """A spawned process started by :func:`_spawn_without_main` (module level: the
    process object is pickled to the child)."""

    _Popen = staticmethod(_spawn_without_main)


class _NoMainSpawnContext(SpawnContext):
    Process = _NoMainSpawnProcess


class LocalExecutor:
    """A pool of worker processes on this machine (default: one per core).

    Processes, not threads: SIFT, matching and RANSAC release the GIL only in
    parts, and each worker keeps its own engine and feature cache connection.
    Workers are started with ``spawn`` so that no lock held by a thread of the
    parent (logging, SQLite, faiss) is inherited in a locked state.
    """

    name = "local"
    #: the parent writes: one writer for the local store, no per-sample records in it
    results_via_store = False

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or available_cores())
        self._pool: Any = None

    def _get_pool(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            # One thread per worker process: the workers already use every core, and
            # a multi-threaded BLAS/OpenMP/OpenCV pool in each of them only thrashes
            # (350 photos on 2 cores: verification 132 s -> 77 s). The variables are
            # read when a worker loads numpy, so they are set while the workers
            # spawn (all of them, now) and then restored: the parent keeps its
            # threads for its own work (the retrieval index). A user's setting wins.
            added = [var for var in THREAD_ENV_VARS if var not in os.environ] if self.workers > 1 else []
            for var in added:
                os.environ[var] = "1"
            try:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=_NoMainSpawnContext(),
                    initializer=_worker_init,
                    initargs=(os.getpid(), threading.current_thread() is threading.main_thread()),
                )
                for fut in [self._pool.submit(os.getpid) for _ in range(self.workers)]:
                    fut.result()
            finally:
                for var in added:
                    os.environ.pop(var, None)
        return self._pool

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        pool = self._get_pool()
        pending: set[Any] = set()
        it = iter(tasks)
        limit = self.workers * IN_FLIGHT_PER_WORKER
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        pending.add(pool.submit(fn, next(it)))
                    except StopIteration:
                        exhausted = True
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        except BaseException:
            if any(not fut.done() for fut in pending):
                # interrupted (Ctrl-C, SIGTERM) or abandoned with tasks in flight: stop the
                # workers now rather than wait for their tasks (a fresh pool serves any
                # later map). The futures are left to the pool, which fails them all:
                # cancelling them first races its manager thread (InvalidStateError).
                self._stop_workers()
            raise

    def _stop_workers(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        # the workers are gone: the pool's manager thread sees it and ends at once (a
        # shutdown without waiting would leave it to write to a closed pipe at exit)
        pool.shutdown(wait=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Tasks on a Dask distributed cluster (``dask://HOST:PORT``, or a ``Client``).

    The same function runs on the workers as locally; results stream back with
    ``as_completed``. Install with ``pip install 'consist[dask]'``.

    The workers write features and verification records to the shared store
    themselves (``results_via_store``) and return sample ids: at 10^6 images the
    parent would otherwise receive every feature blob and every record through the
    scheduler. A worker that dies mid-task is replaced and its task reruns elsewhere
    (Dask's ``allowed-failures``, default 3 per task); the writes are idempotent, so a
    rerun doubles nothing.
    """

    name = "dask"
    results_via_store = True

    def __init__(self, address: str | Any) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise ConsistError("--executor dask://... needs dask.distributed: pip install 'consist[dask]'") from exc
        if isinstance(address, str):
            target = address[len("dask://") :] if address.startswith("dask://") else address
            try:
                self.client = Client(f"tcp://{target}" if "://" not in target else target, timeout=30)
            except OSError as exc:
                raise ConsistError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
            self._owned = True
        else:
            self.client, self._owned = address, False
        info = self.client.scheduler_info()
        self.workers = max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))
        assert self.client.scheduler is not None  # a connected client has its scheduler RPC
        self.address = self.client.scheduler.address

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        from distributed import as_completed

        it = iter(tasks)
        limit = self.workers * IN_FLIGHT_PER_WORKER
        first = []
        for task in it:
            first.append(self.client.submit(fn, task, pure=False))
            if len(first) >= limit:
                break
        if not first:
            return
        queue = as_completed(first)
        try:
            for fut in queue:
                result = fut.result()
                fut.release()
                for task in it:
                    queue.add(self.client.submit(fn, task, pure=False))
                    break
                yield result
        except BaseException:
            for fut in list(queue.futures):
                fut.cancel()
            raise

    def close(self) -> None:
        if self._owned:
            self.client.close()


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def check_executor_spec(spec: str | Any | None) -> None:
    """Fail early (before any work) on an executor spec :func:`make_executor` refuses."""
    if spec is None or not isinstance(spec, str) or spec in ("local", "inline") or spec.startswith(("dask://", "tcp://")):
        return
    raise ConsistError(f"unknown executor {spec!r}: use local, inline or dask://HOST:PORT")


def make_executor(spec: str | Any | None, workers: int | None = None) -> Executor:
    """``None``/``"local"``: worker processes (``workers``, default one per core;
    1 runs inline); ``"inline"``; ``"dask://HOST:PORT"`` or a ``distributed.Client``."""
    if spec is None or spec == "local":
        return InlineExecutor() if workers == 1 else LocalExecutor(workers)
    if spec == "inline":
        return InlineExecutor()
    if isinstance(spec, str):
        if spec.startswith(("dask://", "tcp://")):
            return DaskExecutor(spec)
        raise ConsistError(f"unknown executor {spec!r}: use local, inline or dask://HOST:PORT")
    return DaskExecutor(spec)
