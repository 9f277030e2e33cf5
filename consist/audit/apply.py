"""``--apply``: write the corrected labels to a new file and record each change in
the store's history (automatic provenance, the audit's reason; ``consist undo SEQ``
reverts one). The input is never touched, and a label a person gave in the store
(``user`` provenance) is never replaced.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consist.audit.config import AuditConfig
from consist.audit.decide import AuditRow
from consist.audit.outputs import atomic_open, safe_csv_row

__all__ = ["CHANGES_CSV", "CORRECTED_CSV", "applicable", "apply_corrections"]

#: The dataset's labels with the flagged ones corrected: ``path,label,<extra columns>``
#: (the input's format: feed it back to ``consist audit --labels``).
CORRECTED_CSV = "labels.corrected.csv"
#: One line per change: ``path,previous_label,label,confidence,history_seq,reason``.
CHANGES_CSV = "label_changes.csv"


def apply_corrections(ds: Any, rows: Sequence[AuditRow], out_dir: Path, store_uri: str, cfg: AuditConfig) -> dict[str, Any]:
    from consist.errors import LabelConflict, SampleNotFound
    from consist.records import Provenance
    from consist.stores.uri import open_store

    by_id = {r.sample: r for r in rows}
    changes = [r for r in rows if applicable(r, cfg.min_confidence, cfg.min_witnesses)]
    below = sum(1 for r in rows if r.flagged and r not in changes)
    extra = sorted({k for it in ds.items for k in it.meta})
    with atomic_open(out_dir / CORRECTED_CSV, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(safe_csv_row(["path", "label", *extra]))
        for it in ds.items:
            r = by_id.get(it.id)
            label = r.suggested_label if r is not None and r in changes else it.label
            w.writerow(safe_csv_row([it.id, label, *(it.meta.get(k, "") for k in extra)]))
    applied, kept = [], []
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
                applied.append((r, None if e is None else e.seq))
    finally:
        store.close()
    with atomic_open(out_dir / CHANGES_CSV, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "previous_label", "label", "confidence", "history_seq", "reason"])
        for r, seq in applied:
            w.writerow(safe_csv_row([r.sample, r.given_label, r.suggested_label, r.confidence, "" if seq is None else seq, r.reason]))
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
