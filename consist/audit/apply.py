"""``--apply``: relabel the flagged samples in the store, recording each change in
its history (automatic provenance, the audit's reason; ``consist undo SEQ`` reverts
one), then write the corrected labels FROM the store: the store is the one truth, so
a label a person gave while the audit ran (``user`` provenance, never replaced) is the
label of ``labels.corrected.csv`` too, and ``consist export`` writes the same file
again after any later change (an undo). The input is never touched.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consist.audit.config import AuditConfig
from consist.audit.decide import AuditRow
from consist.audit.outputs import atomic_open, safe_csv_row

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = ["CHANGES_CSV", "CORRECTED_CSV", "applicable", "apply_corrections", "export_labels"]

#: The dataset's labels with the flagged ones corrected: ``path,label,<extra columns>``
#: (the input's format: feed it back to ``consist audit --labels``).
CORRECTED_CSV = "labels.corrected.csv"
#: One line per change: ``path,previous_label,label,confidence,history_seq,reason``.
CHANGES_CSV = "label_changes.csv"


def apply_corrections(ds: Any, rows: Sequence[AuditRow], out_dir: Path, store_uri: str, cfg: AuditConfig) -> dict[str, Any]:
    """Relabel in the store, then write ``label_changes.csv`` and ``labels.corrected.csv``.

    Nothing is written when the store cannot be changed (locked, read-only): the
    relabels run in one transaction first, and both files are written from the store
    only once it committed, each atomically.
    """
    from consist.errors import LabelConflict, SampleNotFound
    from consist.records import Provenance
    from consist.stores.uri import open_store

    changes = [r for r in rows if applicable(r, cfg.min_confidence, cfg.min_witnesses)]
    changing = {r.sample for r in changes}  # a set: `r not in changes` was flagged x changes comparisons
    below = sum(1 for r in rows if r.flagged and r.sample not in changing)
    applied: list[tuple[AuditRow, int | None]] = []
    kept: list[str] = []
    store = open_store(store_uri, create=False)
    try:
        with store.transaction():
            for r in changes:
                old = store.get(r.sample)
                if old is not None and old.provenance is Provenance.USER:
                    kept.append(r.sample)
                    continue
                try:
                    e = store.relabel(r.sample, r.suggested_label, provenance=Provenance.AUTO, reason=f"consist audit --apply: {r.reason} (confidence {r.confidence})", force=True)  # type: ignore[arg-type]
                except (LabelConflict, SampleNotFound):
                    kept.append(r.sample)
                    continue
                # already applied by an earlier --apply: point at that change, still the one to undo
                applied.append((r, e.seq if e is not None else _applied_seq(store, r.sample, str(r.suggested_label))))
        labels = _store_labels(store, [it.id for it in ds.items])
    finally:
        store.close()
    with atomic_open(out_dir / CHANGES_CSV, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "previous_label", "label", "confidence", "history_seq", "reason"])
        for r, seq in applied:
            w.writerow(safe_csv_row([r.sample, r.given_label, r.suggested_label, r.confidence, "" if seq is None else seq, r.reason]))
    extra = sorted({k for it in ds.items for k in it.meta})
    _write_labels(out_dir / CORRECTED_CSV, ((it.id, labels.get(it.id, it.label), it.meta) for it in ds.items), extra)
    return {
        "corrected_csv": str(out_dir / CORRECTED_CSV),
        "changes_csv": str(out_dir / CHANGES_CSV),
        "changed": len(applied),
        "kept_user_labels": kept,
        "history_seqs": [seq for _, seq in applied if seq is not None],
        "min_confidence": cfg.min_confidence,
        "min_witnesses": cfg.min_witnesses,
        "flagged_below_min_confidence": below,
    }


def _applied_seq(store: Store, sample_id: str, label: str) -> int | None:
    """The history entry, still in effect, that gave ``sample_id`` its ``label``."""
    for e in store.history(sample_id=sample_id, limit=None):
        if e.undone_by is None and e.action in ("relabel", "update", "add") and (e.after or {}).get("label") == label:
            return e.seq
    return None


def _store_labels(store: Store, ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        for sid, s in zip(chunk, store.get_many(chunk)):
            if s is not None and s.label is not None:
                out[sid] = s.label
    return out


def _write_labels(path: Path, rows: Iterable[tuple[str, str, dict[str, Any]]], extra: Sequence[str]) -> int:
    n = 0
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(safe_csv_row(["path", "label", *extra]))
        for sid, label, meta in rows:
            w.writerow(safe_csv_row([sid, label, *(meta.get(k, "") for k in extra)]))
            n += 1
    return n


def export_labels(store: Store, path: Path) -> dict[str, Any]:
    """Write the store's current labels to ``path``: ``path,label,<meta columns>``, one
    row per live sample, by id (the format ``consist audit --labels`` reads; cells
    spreadsheet-safe). Returns ``{"out", "samples", "labels", "columns"}``."""
    samples = sorted(store.samples(), key=lambda s: s.id)
    extra = sorted({k for s in samples for k in (s.meta or {}) if isinstance(k, str)})
    n = _write_labels(path, ((s.id, s.label or "", dict(s.meta or {})) for s in samples), extra)
    return {"out": str(path), "samples": n, "labels": len({s.label for s in samples if s.label}), "columns": ["path", "label", *extra]}


def applicable(row: AuditRow, min_confidence: float, min_witnesses: int = 0) -> bool:
    """Whether ``--apply`` relabels ``row``: flagged, with a suggestion; the given
    label's P(wrong) and the suggestion's posterior both at least ``min_confidence`` (a
    generic label is surely wrong, but its photo's landmark may be a guess); and at
    least ``min_witnesses`` other verified views carrying the suggested label (a
    suggestion resting on one other image is only as good as that image's own label)."""
    return bool(
        row.flagged
        and row.suggested_label
        and row.suggested_label != row.given_label
        and (row.confidence or 0.0) >= min_confidence
        and (row.suggestion_confidence or 0.0) >= min_confidence
        and row.witnesses >= min_witnesses
    )
