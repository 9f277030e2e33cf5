"""Writing the audit's files: ``audit.csv``, ``audit.jsonl``, ``summary.json``, the
corrected labels of ``--apply``. Every file is written to a temporary name and
renamed into place, so that an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import attrs

from consist.audit.decide import STATUSES, AuditRow
from consist.csvcells import FORMULA_TRIGGERS, csv_cell, read_csv_cell, safe_csv_row

__all__ = ["CSV_COLUMNS", "FORMULA_TRIGGERS", "JsonlWriter", "atomic_open", "csv_cell", "read_csv_cell", "report_order", "row_to_csv", "safe_csv_row", "write_csv", "write_json"]


#: The fixed columns of ``audit.csv``; the dataset's extra CSV columns follow.
CSV_COLUMNS = (
    "sample",
    "given_label",
    "suggested_label",
    "flagged",
    "confidence",
    "status",
    "reason",
    "evidence_neighbour",
    "evidence_label",
    "evidence_inliers",
    "verified_neighbours",
    "near_duplicates",
    "basis",
    "label_kind",
    "suggestion_confidence",
    "group_size",
    "witnesses",
)


def report_order(rows: Iterable[AuditRow]) -> list[AuditRow]:
    """Flagged first (most confident first), then the rest by status and name."""
    rank = {s: i for i, s in enumerate(STATUSES)}
    return sorted(rows, key=lambda r: (rank.get(r.status, 9), -(r.confidence or 0.0) if r.flagged else 0.0, r.sample))


@contextmanager
def atomic_open(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Write ``path`` via ``path.tmp`` + fsync + rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def row_to_csv(row: AuditRow, extra: Sequence[str]) -> list[str]:
    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, (tuple, list)):
            return ";".join(map(str, v))
        return str(v)

    values = [fmt(getattr(row, c)) for c in CSV_COLUMNS]
    return values + [fmt(row.meta.get(name)) for name in extra]


def _extra_header(extra: Sequence[str]) -> list[str]:
    return [f"meta_{n}" if n in CSV_COLUMNS else n for n in extra]


def write_csv(path: Path, rows: Iterable[AuditRow], extra: Sequence[str]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(safe_csv_row([*CSV_COLUMNS, *_extra_header(extra)]))
        for row in rows:
            w.writerow(safe_csv_row(row_to_csv(row, extra)))


def write_json(path: Path, data: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=2, default=str)
        fh.write("\n")


class JsonlWriter:
    """``audit.jsonl``: one line per sample, the row and the full decision behind it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cm = atomic_open(path, "w", encoding="utf-8")
        self._fh = self._cm.__enter__()

    def write(self, row: AuditRow, record: Mapping[str, Any] | None) -> None:
        data = attrs.asdict(row)
        if record is not None:
            data["neighbours"] = record.get("neighbours", [])
            data["edges"] = record.get("edges", [])
            data["decision"] = record.get("decision")
        self._fh.write(json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
