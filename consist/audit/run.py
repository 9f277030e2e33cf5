"""``consist audit`` end to end, as a few resumable steps (hloc style: each step
reads what the previous one cached):

1. **read** the dataset (class sub-folders or a CSV); bad entries are listed, not fatal;
2. **extract** local features and embeddings once, in parallel, into the store
   (the feature cache: a re-run, or another audit of the same images, skips it);
3. **index**: the retriever's ``prepare`` (ASMK: train or update its index over the
   cached features) and each checker's ``prepare``;
4. **verify**, leave-one-out, each sample against its top-``k`` neighbours with the
   engine's checkers (the N * k part, in parallel: local processes or Dask); each
   finished sample is appended durably to ``DIR/.audit/verified.jsonl``, which is
   what ``--resume`` continues from;
5. **decide**: build the verified graph, add its votes, aggregate;
6. **report**: every enabled reporter (built in: ``audit.csv``, ``audit.jsonl``,
   ``summary.json``, ``report.html``; plugins add theirs);
7. **apply** (optional): corrected labels into a new CSV, and relabels (with
   provenance) in the store's history.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import structlog

from consist.audit.config import AuditConfig
from consist.audit.decide import ANSWERED_STATUSES, STATUSES, AuditRow, Decisions, decide_all
from consist.audit.executors import Executor, check_executor_spec, make_executor
from consist.audit.journal import Journal, read_journal_in_order
from consist.audit.outputs import write_json
from consist.audit.work import (
    STORED_KEY,
    checker_options,
    extract_chunk,
    feature_spec,
    local_features_available,
    make_feature_extractor,
    record_kind,
    resolve_stored,
    retriever_name,
    store_extracted,
    verify_chunk,
)
from consist.contracts.checker import Checker
from consist.contracts.reporter import AuditOutcome
from consist.contracts.store import Store
from consist.errors import ConsistError

__all__ = ["STATE_DIR", "AuditResult", "OutputLocked", "ResumeMismatch", "run_audit"]

log = structlog.get_logger("consist.audit")

#: Working files of a run (journal, labels, run fingerprint) inside the output folder.
STATE_DIR = ".audit"
#: Samples written to the store per transaction during extraction.
WRITE_BATCH = 64


class ResumeMismatch(ConsistError):
    """``--resume`` on an output folder made with other data or options."""


@attrs.frozen
class AuditResult:
    """What :func:`consist.audit` returns: the rows (one per sample), the summary,
    and where the files went. ``to_pandas()`` gives the table as a DataFrame."""

    rows: tuple[AuditRow, ...]
    summary: dict[str, Any]
    out: Path
    store: str

    @property
    def flagged(self) -> tuple[AuditRow, ...]:
        return tuple(r for r in self.rows if r.flagged)

    def to_records(self) -> list[dict[str, Any]]:
        return [attrs.asdict(r) for r in self.rows]

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.to_records())

    def __len__(self) -> int:
        return len(self.rows)


class _LineProgress:
    """Progress for a log file or a pipe (stderr is not a terminal): one line now and
    then (every :data:`LINE_EVERY_S` seconds, and at the end) instead of a bar redrawn
    with carriage returns, or nothing until the end."""

    def __init__(self, desc: str, total: int, initial: int = 0) -> None:
        self.desc, self.total, self.n, self.start_n = desc, total, initial, initial
        self.t0 = self.last = time.monotonic()
        self.closed = False

    def _line(self) -> str:
        dt = max(time.monotonic() - self.t0, 1e-9)
        rate = (self.n - self.start_n) / dt
        eta = f", ETA {(self.total - self.n) / rate:.0f} s" if rate > 0 and self.n < self.total else ""
        return f"{self.desc}: {self.n}/{self.total} images ({rate:.1f}/s, {dt:.0f} s{eta})"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LINE_EVERY_S:
            self.last = now
            print(self._line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            print(self._line(), file=sys.stderr, flush=True)


#: Seconds between two progress lines when stderr is not a terminal.
LINE_EVERY_S = 10.0


def _progress(desc: str, total: int, initial: int = 0, enabled: bool = True) -> Any:
    from tqdm.auto import tqdm

    if enabled and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return _LineProgress(desc, total, initial)
    return tqdm(total=total, initial=initial, desc=desc, unit="img", file=sys.stderr, disable=None if enabled else True, dynamic_ncols=True, smoothing=0.1)


def _chunks(seq: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), size):
        yield list(seq[i : i + size])


def _fingerprint(ds: Any, cfg: AuditConfig, checkers: Sequence[str] | None, store_uri: str) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([attrs.asdict(cfg), sorted(checkers or []), store_uri], sort_keys=True, default=str).encode())
    for it in ds.items:
        h.update(f"{it.id}\0{it.label}\0".encode())
    return h.hexdigest()


class OutputLocked(ConsistError):
    """Another audit is writing to the same output folder."""


#: The lock file of a running audit, in the output folder's state folder.
LOCK_FILE = "lock"


@contextmanager
def _locked_out(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` for the whole audit: a second audit on
    the same ``--out`` (whose temporary files and journal would collide) is refused
    with one line. The lock is released when the audit ends, or its process dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    state = out_dir / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
        fh = open(state / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held until the audit ends
    except OSError as exc:
        raise ConsistError(f"{out_dir}: cannot write the output folder ({exc.strerror or exc})") from exc
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            raise OutputLocked(f"{out_dir}: another consist audit is writing to this folder{f' (pid {holder})' if holder else ''}; wait for it to finish or give another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


def run_audit(dataset: str | os.PathLike[str], out: str | os.PathLike[str], **kwargs: Any) -> AuditResult:
    """Audit the labels of ``dataset``; see :func:`consist.audit` for the arguments.
    The output folder is locked for the run (:class:`OutputLocked` for a second one)."""
    out_dir = Path(out)
    existed = out_dir.exists()
    try:
        with _locked_out(out_dir):
            return _run_audit(dataset, out, **kwargs)
    except OutputLocked:
        raise
    except ConsistError:
        if not existed:  # bad input: leave no folder behind that this run created
            _remove_own(out_dir)
        raise


def _remove_own(out_dir: Path) -> None:
    """Remove ``out_dir`` when it holds only what this run wrote before it failed (its
    state folder, an empty store): never a file of another origin."""
    import shutil

    ours = {STATE_DIR, "store.db", "store.db-wal", "store.db-shm", "store.db-journal"}
    try:
        if all(p.name in ours for p in out_dir.iterdir()):
            shutil.rmtree(out_dir, ignore_errors=True)
    except OSError:
        pass


def _run_audit(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    path_column: str | None = None,
    name_pattern: str | None = None,
    label_column: str | None = None,
    store: str | None = None,
    checkers: Sequence[str] | None = None,
    executor: str | Any | None = None,
    workers: int | None = None,
    resume: bool = False,
    apply: bool = False,
    config: AuditConfig | None = None,
    report: bool = True,
    reporters_named: Sequence[str] | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    allow_outside: bool = False,
) -> AuditResult:
    """Audit the labels of ``dataset``; see :func:`consist.audit` for the arguments."""
    from consist.datasets import read_dataset
    from consist.stores.uri import open_store

    cfg = config or AuditConfig()
    say = say or (lambda _m: None)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = out_dir / STATE_DIR
    state.mkdir(exist_ok=True)

    check_executor_spec(executor)
    t0 = time.perf_counter()
    ds = read_dataset(dataset, labels, path_column=path_column, label_column=label_column, name_pattern=name_pattern, allow_outside=allow_outside)
    for p in ds.problems:
        say(f"warning: {p.message}")
    timings["read_s"] = time.perf_counter() - t0
    if labels is not None and apply and Path(labels).resolve() == (out_dir / "labels.corrected.csv").resolve():
        raise ConsistError(f"{labels}: --apply writes labels.corrected.csv in --out; use another --out than the input's folder")

    store_uri = store or f"sqlite:///{(out_dir / 'store.db').resolve()}"
    if checkers:
        from consist import plugins

        known = plugins.checkers()
        missing = [c for c in checkers if c not in known]
        if missing:
            raise ConsistError(f"unknown checker(s) {', '.join(missing)} (registered: {', '.join(sorted(known)) or 'none'})")
    from consist import plugins as _plugins

    registered = _plugins.checkers()
    voting = list(checkers) if checkers else default_audit_checkers(registered)
    if not [c for c in voting if c in registered and getattr(registered[c], "reads_pixels", True)]:
        say(f"note: no checker that reads pixels is enabled ({', '.join(voting) or 'none'}): every image will be unverifiable; install consist-spatial (and check {_plugins.ENV_VAR})")
    reporters = choose_reporters(reporters_named, report)
    fp = _fingerprint(ds, cfg, checkers, store_uri)
    # what each image's file is now (size, modification time): an image whose file
    # changed since the last run in this folder is extracted and verified again
    contents = _contents(ds)
    changed = _changed(state / CONTENTS_FILE, contents)
    if changed:
        say(f"{len(changed)} images changed since the last run in {out_dir}: extracting and verifying them again")
    run_file = state / "run.json"
    if resume and run_file.exists():
        old = json.loads(run_file.read_text(encoding="utf-8"))
        if old.get("fingerprint") != fp:
            raise ResumeMismatch(f"{out_dir}: cannot --resume: it holds an audit of other data or with other options (run without --resume to start again)")
    elif resume:
        say(f"nothing to resume in {out_dir}: starting a new audit")
    write_json(run_file, {"fingerprint": fp, "dataset": ds.summary(), "config": attrs.asdict(cfg), "checkers": list(checkers or []), "store": store_uri})
    (state / "labels.json").write_text(json.dumps({it.id: it.label for it in ds.items}, ensure_ascii=False), encoding="utf-8")

    ex = make_executor(executor, workers)
    st = open_store(store_uri, create=True)
    if getattr(st, "path", None) == ":memory:" and ex.name != "inline":
        st.close()
        raise ConsistError(f"{store_uri}: a memory store cannot be shared with worker processes; use a file store or --workers 1")
    failures: dict[str, str] = {}
    # on a cluster (Dask) the workers write features and verification records to the
    # shared store themselves and return ids only: the parent coordinates
    via_store = bool(getattr(ex, "results_via_store", False))
    kind = record_kind(_run_key(fp, out_dir)) if via_store else None
    try:
        if kind is not None and not resume:
            st.delete_artefacts(kind)  # a fresh run of this audit: the last run's records go
        # 2. features
        t0 = time.perf_counter()
        extracted = _extract(ds, st, ex, cfg, failures, progress, say, changed=changed, store_uri=store_uri if via_store else None)
        timings["extract_s"] = time.perf_counter() - t0
        # 3. retrieval index, and what checkers share across queries
        t0 = time.perf_counter()
        if not local_features_available(cfg):
            say(f"note: no feature extractor {feature_spec(cfg).extractor!r} is registered: neighbours come from the tiny embedding and only weak checkers vote (pip install consist-spatial)")
        retriever = _plugins.retrievers()[retriever_name(cfg)]
        if len(st):
            say(f"preparing retriever {retriever.name} ...")
            index_bar = _progress(f"index ({retriever.name})", len(st), 0, progress)

            def indexed(done: int, total: int) -> None:
                index_bar.total = total
                index_bar.update(max(0, done - index_bar.n))

            try:
                retriever.prepare(st, features=feature_spec(cfg) if local_features_available(cfg) else None, progress=indexed)
            finally:
                index_bar.close()
        _prepare_checkers([registered[n] for n in voting if n in registered], st, say, checker_options(cfg))
        timings["index_s"] = time.perf_counter() - t0
    finally:
        st.close()

    # 4. leave-one-out verification, journaled
    t0 = time.perf_counter()
    todo_items = [it for it in ds.items if it.id not in failures]
    if resume and changed:
        _drop_stale(state / "verified.jsonl", changed, store_uri)
    if resume:
        _drop_missing(state / "verified.jsonl", store_uri, say)
    write_json(state / CONTENTS_FILE, contents)
    journal = Journal(state / "verified.jsonl", resume=resume)
    already = sum(1 for it in todo_items if it.id in journal.done)
    if resume and already:
        say(f"resuming: {already} of {len(todo_items)} samples already verified")
    todo = [[it.id, it.uri, it.label, dict(it.meta)] for it in todo_items if it.id not in journal.done]
    base = {"store": store_uri, "config": attrs.asdict(cfg), "checkers": voting, "labels_file": str(state / "labels.json"), "record_kind": kind}
    bar = _progress("verify", len(todo_items), already, progress)
    try:
        with journal:
            for records in ex.map_unordered(verify_chunk, ({**base, "items": chunk} for chunk in _chunks(todo, cfg.chunk_size))):
                journal.append(records)
                bar.update(len(records))
    except KeyboardInterrupt:
        bar.close()
        ex.close()
        say(f"interrupted: {len(journal.done)} of {len(todo_items)} samples verified; run again with --resume to continue")
        raise
    finally:
        bar.close()
        ex.close()
    timings["verify_s"] = time.perf_counter() - t0
    verified_now = len(todo)

    # 5. decide
    t0 = time.perf_counter()
    journal_path = state / "verified.jsonl"
    decisions = _with_identical_copies(_decide(ds, journal_path, store_uri, failures, cfg, registered), ds, contents)
    rows = list(decisions.rows)
    timings["decide_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    summary = _summary(ds, decisions, failures, timings, cfg, ex, store_uri, voting, extracted, verified_now, out_dir)
    if apply:
        from consist.audit.apply import apply_corrections

        summary["applied"] = apply_corrections(ds, rows, out_dir, store_uri, cfg)
    # 6. reporters (summary.json is one of them: it is written after the others, so
    # that it records their timings and failures)
    outcome = AuditOutcome(out=out_dir, rows=tuple(rows), summary=summary, store=store_uri, dataset=str(ds.csv or ds.root), records=lambda: _records(ds, journal_path, store_uri))
    _run_reporters(reporters, outcome, summary)
    log.info("audit_done", dataset=str(dataset), samples=len(rows), flagged=summary["counts"]["flagged"], total_s=round(timings["total_s"], 2))
    return AuditResult(rows=tuple(rows), summary=summary, out=out_dir, store=store_uri)


def default_audit_checkers(registered: Mapping[str, Checker]) -> list[str]:
    """The checkers an audit runs when none are named: those enabled by default,
    except those that build a store-wide matching graph (``builds_store_graph``): the
    audit verifies every image against its neighbours itself and propagates over that
    graph (consist.audit.graph), so such a checker would verify every pair a second
    time (the topological ``community`` vote: 82 landmark photos 92 s instead of 63 s,
    identical verdicts in bench_audit)."""
    return [n for n, c in registered.items() if getattr(c, "enabled_by_default", True) and not getattr(c, "builds_store_graph", False)]


def choose_reporters(named: Sequence[str] | None, html: bool) -> list[Any]:
    """The reporters to run: those enabled by default (``report.html`` only when
    ``html``), plus those ``named`` (``--reporters``); unknown names are an error."""
    from consist import plugins

    found = plugins.reporters()
    missing = [n for n in (named or ()) if n not in found]
    if missing:
        raise ConsistError(f"unknown reporter(s) {', '.join(missing)} (registered: {', '.join(sorted(found)) or 'none'})")
    chosen = [r for n, r in found.items() if (getattr(r, "enabled_by_default", True) and (html or n != "html")) or n in (named or ())]
    # summary.json last: it records what the others wrote
    return sorted(chosen, key=lambda r: r.name == "summary")


def _run_reporters(reporters: Sequence[Any], outcome: AuditOutcome, summary: dict[str, Any]) -> None:
    """Run each reporter; one that fails is recorded in the summary, never fatal."""
    written: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    summary["reporters"] = {"written": written, "failed": failed}
    for reporter in reporters:
        t1 = time.perf_counter()
        try:
            if reporter.name == "summary":
                summary["timings"]["report_s"] = round(sum(summary["timings"].get(f"report_{k}_s", 0.0) for k in written), 3)
            paths = reporter.report(outcome)
            written[reporter.name] = [str(p) for p in paths]
        except Exception as exc:  # a plugin's reporter must not lose the other outputs
            failed[reporter.name] = f"{type(exc).__name__}: {exc}"
            log.warning("reporter_failed", reporter=reporter.name, error=failed[reporter.name])
        summary["timings"][f"report_{reporter.name}_s"] = round(time.perf_counter() - t1, 3)


def _records(ds: Any, journal_path: Path, store_uri: str) -> Iterator[dict[str, Any]]:
    """The journal's record of each dataset sample, once each, in dataset order
    (whatever order the workers finished in; a resumed run may have journaled a
    sample twice: the first wins). A cluster run's journal lines name records that
    its workers put in the store: those are read from there, in the same order."""
    return resolve_stored(read_journal_in_order(journal_path, (it.id for it in ds.items)), store_uri)


def _run_key(fingerprint: str, out_dir: Path) -> str:
    """What a run's stored verification records are keyed by: the audit's fingerprint
    (data, options, store) and its output folder (two audits of the same data into two
    folders never share records)."""
    return hashlib.blake2b(f"{fingerprint}\0{out_dir.resolve()}".encode(), digest_size=12).hexdigest()


def _drop_missing(journal_path: Path, store_uri: str, say: Callable[[str], None]) -> None:
    """Before ``--resume``: forget the journal lines of a cluster run whose record is
    not in the store (the store was replaced or its records dropped), so that those
    samples are verified again instead of coming back as errors."""
    from consist.audit.journal import read_journal
    from consist.audit.outputs import atomic_open
    from consist.stores.uri import open_store

    if not journal_path.exists():
        return
    keep: list[dict[str, Any]] = []
    dropped = 0
    st = None
    try:
        for rec in read_journal(journal_path):
            kind = rec.get(STORED_KEY)
            if kind:
                st = st or open_store(store_uri, create=False)
                if st.get_artefact(str(rec["id"]), str(kind)) is None:
                    dropped += 1
                    continue
            keep.append(rec)
    finally:
        if st is not None:
            st.close()
    if not dropped:
        return
    say(f"{dropped} verified samples have no record in the store {store_uri}: verifying them again")
    with atomic_open(journal_path, "w", encoding="utf-8") as fh:
        for rec in keep:
            fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")


def _prepare_checkers(chosen: Sequence[Checker], st: Store, say: Callable[[str], None], options: Mapping[str, Any] | None = None) -> None:
    """Let checkers build what they share across queries once, here, before the
    workers start (each worker would otherwise build it, concurrently): the optional
    ``prepare(store, options, progress)`` of the checker contract."""
    for c in chosen:
        prepare = getattr(c, "prepare", None)
        if not callable(prepare):
            continue
        try:
            say(f"preparing checker {c.name} ...")
            prepare(st, (options or {}).get(c.name), None)
        except Exception as exc:  # the checker will abstain or retry per query: never fatal here
            log.warning("checker_prepare_failed", checker=getattr(c, "name", "?"), error=f"{type(exc).__name__}: {exc}")


def _extract(
    ds: Any, st: Store, ex: Executor, cfg: AuditConfig, failures: dict[str, str], progress: bool, say: Callable[[str], None], *, changed: frozenset[str] = frozenset(), store_uri: str | None = None
) -> dict[str, int]:
    """Cache features and embeddings for the samples that lack them or whose file
    changed (``changed``); record failures. With ``store_uri`` (a cluster) the workers
    write to that store themselves and return only ids and errors; otherwise this
    process writes what they return, in batches of :data:`WRITE_BATCH`."""
    extractor = make_feature_extractor(cfg)
    kind = None if extractor is None else extractor.kind
    items = list(ds.items)
    todo = []
    cached = 0
    for batch in _chunks(items, 256):
        existing = st.get_many([it.id for it in batch])
        for it, old in zip(batch, existing):
            have = it.id not in changed and old is not None and old.uri == it.uri and old.embedding is not None and (kind is None or st.get_artefact(it.id, kind) is not None)
            if have:
                cached += 1
            else:
                todo.append(it)
    if not todo:
        return {"cached": cached, "extracted": 0}
    bar = _progress("features", len(items), cached, progress)
    items_of = {it.id: {"id": it.id, "uri": it.uri, "label": it.label, "meta": dict(it.meta), "changed": it.id in changed} for it in todo}
    reason = f"consist audit {ds.csv or ds.root}"
    done = 0

    def task(chunk: list[Any]) -> dict[str, Any]:
        t: dict[str, Any] = {"items": [[it.id, it.uri] for it in chunk], "config": attrs.asdict(cfg), "features": extractor is not None}
        if store_uri is not None:
            t.update(store=store_uri, samples=[items_of[it.id] for it in chunk], reason=reason)
        return t

    pending: list[tuple[dict[str, Any], dict[str, Any]]] = []
    try:
        for results in ex.map_unordered(extract_chunk, (task(chunk) for chunk in _chunks(todo, max(1, cfg.chunk_size // 2)))):
            for r in results:
                if r["error"]:
                    failures[r["id"]] = r["error"]
                    say(f"warning: {r['error']}")
                elif r.get("stored"):
                    done += 1
                else:
                    pending.append((items_of[r["id"]], r))
            bar.update(len(results))
            if len(pending) >= WRITE_BATCH:
                done += store_extracted(st, pending, kind=kind, reason=reason)
                pending = []
        done += store_extracted(st, pending, kind=kind, reason=reason)
    except KeyboardInterrupt:
        # keep every feature extracted so far: the next run (--resume) extracts the rest only
        bar.close()
        done += store_extracted(st, pending, kind=kind, reason=reason)
        say(f"interrupted: features of {cached + done} of {len(items)} images are kept in the store; run again with --resume to continue")
        raise
    finally:
        bar.close()
    return {"cached": cached, "extracted": done}


#: Each image's file as the last run in this folder saw it: ``{id: "size:mtime_ns"}``.
CONTENTS_FILE = "contents.json"


def _contents(ds: Any) -> dict[str, str]:
    out = {}
    for it in ds.items:
        try:
            st = os.stat(it.uri)
            out[it.id] = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            out[it.id] = ""
    return out


def _changed(path: Path, contents: Mapping[str, str]) -> frozenset[str]:
    """Ids whose file differs from what the last run in this folder recorded."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return frozenset()
    if not isinstance(old, dict):
        return frozenset()
    return frozenset(i for i, sig in contents.items() if i in old and old[i] != sig)


def _file_digest(path: str) -> str | None:
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


#: Byte-identical copies with another label listed per sample at most.
MAX_COPIES_LISTED = 10


def _with_identical_copies(decisions: Decisions, ds: Any, contents: Mapping[str, str]) -> Decisions:
    """List byte-identical files with different labels as near-duplicates, whatever
    verification found: a copy of a photo with a plain sky or wall gets too few
    keypoints for the inlier-coverage test, and is still the same picture. Only files
    of equal size are read (to hash them); each sample lists at most
    :data:`MAX_COPIES_LISTED` copies (the first by id), so the work and the output stay
    O(N) however many copies of one file there are."""
    from collections import defaultdict

    uris = {it.id: it.uri for it in ds.items}
    by_size: dict[str, list[str]] = defaultdict(list)
    for sid, sig in contents.items():
        if sig and sid in uris:
            by_size[sig.split(":", 1)[0]].append(sid)
    groups: dict[str, list[str]] = defaultdict(list)
    for ids in by_size.values():
        if len(ids) > 1:
            for sid in ids:
                digest = _file_digest(uris[sid])
                if digest is not None:
                    groups[digest].append(sid)
    rows = {r.sample: r for r in decisions.rows}
    copies: dict[str, set[str]] = defaultdict(set)
    for ids in groups.values():
        members = sorted(sid for sid in ids if sid in rows)
        # per label present, the first few copies carrying another label: a placeholder
        # image copied 10^4 times would otherwise list 10^8 pairs
        others: dict[str, list[str]] = {}
        for label in {rows[sid].given_label for sid in members}:
            others[label] = []
            for b in members:
                if rows[b].given_label != label:
                    others[label].append(b)
                    if len(others[label]) == MAX_COPIES_LISTED:
                        break
        for a in members:
            copies[a].update(others[rows[a].given_label])
    if not copies:
        return decisions
    out = []
    for r in decisions.rows:
        extra = sorted(copies.get(r.sample, set()) - set(r.near_duplicates))
        if extra:
            shown = ", ".join(extra[:3]) + (" ..." if len(extra) > 3 else "")
            r = attrs.evolve(r, near_duplicates=tuple(sorted({*r.near_duplicates, *extra})), reason=f"{r.reason}; byte-identical copy of {shown} carrying another label")
        out.append(r)
    return attrs.evolve(decisions, rows=tuple(out))


def _drop_stale(journal_path: Path, changed: frozenset[str], store_uri: str) -> None:
    """Remove from the journal the samples whose file changed, and those verified
    against one of them, so that ``--resume`` verifies them again (a cluster run's
    records are read from the store to see their neighbours)."""
    from consist.audit.journal import read_journal
    from consist.audit.outputs import atomic_open

    if not journal_path.exists():
        return
    keep = [
        line
        for line, rec in zip(read_journal(journal_path), resolve_stored(read_journal(journal_path), store_uri))
        if rec.get("id") not in changed and not any(n.get("id") in changed for n in rec.get("neighbours") or ())
    ]
    with atomic_open(journal_path, "w", encoding="utf-8") as fh:
        for rec in keep:
            fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")


def _decide(ds: Any, journal_path: Path, store_uri: str, failures: dict[str, str], cfg: AuditConfig, registered: Mapping[str, Checker]) -> Decisions:
    """Every verdict, jointly (:func:`consist.audit.decide.decide_all`), in dataset order.

    Votes of checkers that read pixels but publish no pair evidence (an LMM's
    reflection) enter as independent evidence; pair-publishing checkers enter through
    their pairs, and label-only checkers (``reads_pixels = False``: the knn vote echoes
    retrieval, which the model already reads) not at all.
    """
    independent = frozenset(n for n, c in registered.items() if getattr(c, "reads_pixels", True))
    given = {it.id: it.label for it in ds.items}
    metas = {it.id: dict(it.meta) for it in ds.items}
    return decide_all(_records(ds, journal_path, store_uri), given, metas, failures, cfg, independent=independent)


def _summary(
    ds: Any,
    decisions: Decisions,
    failures: dict[str, str],
    timings: dict[str, float],
    cfg: AuditConfig,
    ex: Executor,
    store_uri: str,
    checkers: Sequence[str] | None,
    extracted: dict[str, int],
    verified_now: int,
    out_dir: Path,
) -> dict[str, Any]:
    from collections import Counter, defaultdict

    from consist._version import __version__

    rows = decisions.rows
    findings = decisions.findings
    counts = Counter(r.status for r in rows)

    def fresh() -> dict[str, Any]:
        return {"samples": 0, **{s: 0 for s in STATUSES}, "suggested_into": 0, "kind": "specific", "linked": 0, "linked_to_same_label": 0}

    per_label: dict[str, dict[str, Any]] = defaultdict(fresh)
    for r in rows:
        d = per_label[r.given_label]
        d["samples"] += 1
        d[r.status] += 1
        if r.flagged and r.suggested_label:
            per_label[r.suggested_label]["suggested_into"] += 1
    for label, st in findings.label_stats.items():
        per_label[label]["linked"] = st["connected"]
        per_label[label]["linked_to_same_label"] = st["agreeing"]
    for label in findings.generic:
        per_label[label]["kind"] = "generic"
    singletons = sorted(label for label, d in per_label.items() if d["samples"] == 1)
    failure_list = [{"kind": p.kind, "path": p.path, "message": p.message} for p in ds.problems]
    failure_list += [{"kind": "unreadable_image", "path": sid, "message": msg} for sid, msg in failures.items()]
    near = sorted({tuple(sorted((r.sample, d))) for r in rows for d in r.near_duplicates})
    n = len(rows)
    total = timings.get("total_s", 0.0)
    answered = sum(1 for r in rows if r.status in ANSWERED_STATUSES)
    return {
        "consist_version": __version__,
        "dataset": ds.summary(),
        "out": str(out_dir),
        "store": store_uri,
        "checkers": sorted(checkers or ()),
        "executor": {"kind": ex.name, "workers": ex.workers},
        "config": attrs.asdict(cfg),
        "counts": {"samples": n, **{s: counts.get(s, 0) for s in STATUSES}, "without_answer": n - answered, "near_duplicate_pairs": len(near), "failures": len(failure_list)},
        "labels": {"generic": findings.generic, "same_object": findings.same_object},
        "label_model": decisions.model,
        "per_label": dict(sorted(per_label.items())),
        "singleton_labels": singletons,
        "near_duplicates": [list(p) for p in near],
        "failures": failure_list,
        "features": extracted,
        "verified_this_run": verified_now,
        "timings": {k: round(v, 3) for k, v in timings.items()} | {"images_per_s": round(n / total, 3) if total > 0 else None},
    }
