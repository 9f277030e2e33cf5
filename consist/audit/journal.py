"""A durable, append-only record of finished work: what makes ``--resume`` exact.

Each finished sample is one JSON line; a batch of lines is written with one
``write`` and made durable with ``fsync`` before the run moves on. After an
interruption (Ctrl-C, ``kill -9``, a power cut) the file ends with complete lines,
possibly followed by one torn line, which :func:`read_journal` drops (and
:class:`Journal` truncates away before appending). A sample id appears at most once:
the reader keeps the first record of an id, the writer never writes an id twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["Journal", "read_journal", "read_journal_in_order"]


def _complete_prefix(path: Path) -> int:
    """Byte length of the file's complete lines (a torn last line is excluded)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb") as fh:
        step = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - step)
            fh.seek(start)
            chunk = fh.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            pos = start
    return 0


def read_journal(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The complete records of a journal, first occurrence of each ``id`` only."""
    p = Path(path)
    if not p.exists():
        return
    end = _complete_prefix(p)
    seen: set[str] = set()
    with p.open("rb") as fh:
        read = 0
        for raw in fh:
            read += len(raw)
            if read > end:
                break
            try:
                rec = json.loads(raw)
            except ValueError:
                continue  # cannot happen for lines we wrote; never crash a resume on it
            rid = rec.get("id")
            if rid in seen:
                continue
            seen.add(rid)
            yield rec


def read_journal_in_order(path: str | os.PathLike[str], ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The records of ``ids`` in that order (first occurrence of each), whatever order
    the workers journaled them in: one pass keeps each record's byte offset (O(N)
    integers, not the records), then each is read back where it lies."""
    p = Path(path)
    if not p.exists():
        return
    end = _complete_prefix(p)
    offsets: dict[str, int] = {}
    with p.open("rb") as fh:
        pos = 0
        for raw in fh:
            start, pos = pos, pos + len(raw)
            if pos > end:
                break
            try:
                rid = json.loads(raw).get("id")
            except ValueError:
                continue
            if isinstance(rid, str) and rid not in offsets:
                offsets[rid] = start
        for rid in ids:
            if rid in offsets:
                fh.seek(offsets[rid])
                yield json.loads(fh.readline())


class Journal:
    """Appends records durably; knows which ids are done.

    Args:
        path: the JSONL file (created if absent).
        resume: keep what is there (dropping a torn last line); otherwise start empty.
    """

    def __init__(self, path: str | os.PathLike[str], *, resume: bool) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        if resume and self.path.exists():
            end = _complete_prefix(self.path)
            if end != self.path.stat().st_size:
                with self.path.open("r+b") as fh:
                    fh.truncate(end)
            self.done = {rec["id"] for rec in read_journal(self.path)}
        else:
            self.path.write_bytes(b"")
        self._fh = self.path.open("ab")

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Write the records whose id is not done yet, then fsync; returns how many."""
        lines = []
        for rec in records:
            if rec["id"] in self.done:
                continue
            self.done.add(rec["id"])
            lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        if lines:
            self._fh.write(b"".join(lines))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        return len(lines)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
