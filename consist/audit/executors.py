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
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from consist.errors import ConsistError

__all__ = ["IN_FLIGHT_PER_WORKER", "DaskExecutor", "Executor", "InlineExecutor", "LocalExecutor", "available_cores", "check_executor_spec", "make_executor"]

#: Tasks queued per worker: enough to keep every worker busy, few enough that an
#: interrupted run has little work in flight and results do not pile up in memory.
IN_FLIGHT_PER_WORKER = 2


class Executor(Protocol):
    name: str
    workers: int

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Runs every task in this process, in order (one core; tests and debugging)."""

    name = "inline"
    workers = 1

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)

    def close(self) -> None:
        pass


#: Environment variables that size the thread pools of numpy's BLAS and OpenMP.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _single_threaded_worker() -> None:
    """Worker initialiser: OpenCV's own thread pool to one thread (see ``_get_pool``)."""
    if os.environ.get("OMP_NUM_THREADS") == "1":
        try:
            import cv2

            cv2.setNumThreads(1)
        except ImportError:  # no OpenCV (consist-spatial not installed): nothing to limit
            pass


class LocalExecutor:
    """A pool of worker processes on this machine (default: one per core).

    Processes, not threads: SIFT, matching and RANSAC release the GIL only in
    parts, and each worker keeps its own engine and feature cache connection.
    Workers are started with ``spawn`` so that no lock held by a thread of the
    parent (logging, SQLite, faiss) is inherited in a locked state.
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or available_cores())
        self._pool: Any = None

    def _get_pool(self) -> Any:
        if self._pool is None:
            import multiprocessing
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
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_single_threaded_worker)
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
            for fut in pending:
                fut.cancel()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Tasks on a Dask distributed cluster (``dask://HOST:PORT``, or a ``Client``).

    The same function runs on the workers as locally; results stream back with
    ``as_completed``. Install with ``pip install 'consist[dask]'``.
    """

    name = "dask"

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
