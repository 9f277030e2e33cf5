"""The audit's verdicts as the review app pages them, joined with the store's current
labels.

``audit.jsonl`` is read once: the small per-sample fields stay in memory (a few hundred
bytes a sample: 10,000 samples are a few MB) with the byte offset of each line, and a
sample's heavy evidence (neighbours, pair evidence, votes) is read from its offset when
its page is opened. The store's labels are mirrored and kept in sync with its history
(only the samples changed since the last seen entry are re-read), so a change made
elsewhere (``consist undo`` in a terminal, another reviewer) shows on the next request.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from consist.contracts.store import Store
from consist.errors import ConsistError

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "ROW_FIELDS", "AuditIndex", "QueueFilter", "ReviewState"]

#: Samples per page of the queue (the page asks; the server caps it at MAX_PAGE_SIZE).
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Fields of an audit row the queue shows and filters on (the rest is read on demand).
ROW_FIELDS = (
    "sample",
    "given_label",
    "suggested_label",
    "flagged",
    "confidence",
    "status",
    "reason",
    "basis",
    "label_kind",
    "suggestion_confidence",
    "group_size",
    "witnesses",
    "evidence_neighbour",
    "evidence_inliers",
    "verified_neighbours",
)
#: Statuses whose label the audit reports as wrong, reviewed first.
_WRONG = ("flagged", "suspect")
_STATUS_ORDER = {s: i for i, s in enumerate(("flagged", "suspect", "plausible", "unverifiable", "ok", "unreadable"))}
#: Queue selections (filter -> ordered rows) kept until the store changes.
SELECTION_CACHE = 64
#: Bins of the confidence (P(wrong)) histogram of the overview.
HISTOGRAM_BINS = 20


@attrs.frozen
class ReviewState:
    """A sample as the store holds it now."""

    label: str | None
    provenance: str
    has_region: bool
    deleted: bool = False


@attrs.frozen
class QueueFilter:
    """What the review queue shows. ``review``: ``pending`` (no person has decided:
    the label's provenance is not ``user``), ``reviewed``, or ``all``."""

    statuses: tuple[str, ...] = ()
    label: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    review: str = "all"
    text: str = ""
    sort: str = "priority"
    min_suggestion_confidence: float | None = None


def _decision(row: Mapping[str, Any], state: ReviewState | None) -> str:
    """How a person decided this sample, read off the store: ``pending``, ``accepted``
    (now carries the suggestion), ``kept`` (a person confirmed the given label),
    ``relabelled`` (another label), ``removed``."""
    if state is None or state.deleted:
        return "removed" if state is not None else "pending"
    if state.provenance != "user":
        return "pending"
    if state.label == row["given_label"]:
        return "kept"
    if row.get("suggested_label") and state.label == row["suggested_label"]:
        return "accepted"
    return "relabelled"


class AuditIndex:
    """An audit folder's verdicts, indexed for paging, joined with a store's labels."""

    def __init__(self, audit_dir: Path, store: Store) -> None:
        self.audit_dir = Path(audit_dir)
        self.store = store
        summary_path = self.audit_dir / "summary.json"
        jsonl = self.audit_dir / "audit.jsonl"
        for needed in (summary_path, jsonl):
            if not needed.is_file():
                raise ConsistError(f"{self.audit_dir}: not an audit folder (no {needed.name}); give the --out folder of consist audit (consist audit IMAGES --out AUDIT_DIR)")
        try:
            self.summary: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConsistError(f"{summary_path}: not readable as an audit summary ({exc})") from exc
        if not isinstance(self.summary, dict):
            raise ConsistError(f"{summary_path}: not an audit summary (not a JSON object)")
        self.jsonl = jsonl
        self.rows: list[dict[str, Any]] = []
        self._offsets: dict[str, int] = {}
        self._load_rows()
        self._order = {r["sample"]: i for i, r in enumerate(self.rows)}
        self._lock = threading.RLock()
        self._states: dict[str, ReviewState] = {}
        self._seen_seq = 0
        self._version = 0  # bumped whenever a sample's state changes: selections cached per version
        self._selections: dict[QueueFilter, tuple[int, list[dict[str, Any]]]] = {}
        self._load_states()

    # ------------------------------------------------------------------ loading

    def _load_rows(self) -> None:
        offset = 0
        with self.jsonl.open("rb") as f:
            for n, line in enumerate(f, 1):
                start, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    raise ConsistError(f"{self.jsonl}: line {n} is not JSON ({exc}); the audit folder is damaged: run the audit again") from exc
                if not isinstance(rec, dict) or not isinstance(rec.get("sample"), str):
                    raise ConsistError(f"{self.jsonl}: line {n} is not an audit record")
                row = {k: rec.get(k) for k in ROW_FIELDS}
                row["given_label"] = str(row["given_label"]) if row["given_label"] is not None else ""
                self.rows.append(row)
                self._offsets[rec["sample"]] = start

    def _load_states(self) -> None:
        newest = self.store.history(limit=1)
        self._seen_seq = newest[0].seq if newest else 0
        ids = [r["sample"] for r in self.rows]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for sid, sample in zip(chunk, self.store.get_many(chunk)):
                if sample is not None:
                    self._states[sid] = ReviewState(sample.label, sample.provenance.value, sample.region is not None)

    def refresh(self) -> int:
        """Re-read the samples the store's history changed since the last call;
        returns how many (cheap when nothing changed: one indexed read)."""
        with self._lock:
            newest = self.store.history(limit=1)
            seq = newest[0].seq if newest else 0
            if seq <= self._seen_seq:
                return 0
            changed = sorted({e.sample_id for e in self.store.history(since=self._seen_seq, limit=None, newest_first=False)} & self._order.keys())
            for sid, sample in zip(changed, self.store.get_many(changed)):
                if sample is None:
                    self._states[sid] = ReviewState(None, "user", False, deleted=True)
                else:
                    self._states[sid] = ReviewState(sample.label, sample.provenance.value, sample.region is not None)
            self._seen_seq = seq
            self._version += 1
            return len(changed)

    # -------------------------------------------------------------------- reads

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._order

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, sample_id: str) -> dict[str, Any] | None:
        i = self._order.get(sample_id)
        return None if i is None else self.rows[i]

    def state(self, sample_id: str) -> ReviewState | None:
        return self._states.get(sample_id)

    def view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A row with the store's current label and the review decision."""
        state = self._states.get(row["sample"])
        return {
            **row,
            "current_label": None if state is None else state.label,
            "provenance": None if state is None else state.provenance,
            "has_region": bool(state and state.has_region),
            "decision": _decision(row, state),
        }

    def record(self, sample_id: str) -> dict[str, Any] | None:
        """The sample's whole audit record (neighbours, pair evidence, votes), read
        from its line of ``audit.jsonl``."""
        offset = self._offsets.get(sample_id)
        if offset is None:
            return None
        with self.jsonl.open("rb") as f:
            f.seek(offset)
            rec = json.loads(f.readline())
        return rec if isinstance(rec, dict) else None

    def select(self, flt: QueueFilter) -> list[dict[str, Any]]:
        """The rows ``flt`` keeps, in queue order: by default what the audit reports
        wrong first, most confident first, then the rest (id order breaks ties).
        Cached until the store changes (paging through one filter filters once)."""
        with self._lock:
            hit = self._selections.get(flt)
            if hit is not None and hit[0] == self._version:
                return hit[1]
            out = self._select(flt)
            if len(self._selections) > SELECTION_CACHE:
                self._selections.clear()
            self._selections[flt] = (self._version, out)
            return out

    def _select(self, flt: QueueFilter) -> list[dict[str, Any]]:
        text = flt.text.strip().lower()
        statuses = set(flt.statuses)
        out = []
        for row in self.rows:
            if statuses and row["status"] not in statuses:
                continue
            if flt.label is not None and flt.label not in (row["given_label"], row.get("suggested_label")):
                continue
            conf = row.get("confidence")
            if flt.min_confidence is not None and (conf is None or conf < flt.min_confidence):
                continue
            if flt.max_confidence is not None and (conf is None or conf > flt.max_confidence):
                continue
            if flt.min_suggestion_confidence is not None and (row.get("suggestion_confidence") is None or row["suggestion_confidence"] < flt.min_suggestion_confidence):
                continue
            if text and text not in row["sample"].lower() and text not in row["given_label"].lower():
                continue
            if flt.review != "all":
                pending = _decision(row, self._states.get(row["sample"])) == "pending"
                if (flt.review == "pending") != pending:
                    continue
            out.append(row)
        if flt.sort == "id":
            out.sort(key=lambda r: r["sample"])
        elif flt.sort == "label":
            out.sort(key=lambda r: (r["given_label"], r["sample"]))
        else:
            out.sort(key=lambda r: (_STATUS_ORDER.get(r["status"], 9), -(r.get("confidence") or 0.0), r["sample"]))
        return out

    def page(self, flt: QueueFilter, offset: int = 0, limit: int = DEFAULT_PAGE_SIZE) -> dict[str, Any]:
        with self._lock:
            selected = self.select(flt)
            limit = max(1, min(int(limit), MAX_PAGE_SIZE))
            offset = max(0, int(offset))
            items = [self.view(r) for r in selected[offset : offset + limit]]
        return {"total": len(selected), "offset": offset, "limit": limit, "items": items}

    def neighbours_in_order(self, flt: QueueFilter, sample_id: str) -> tuple[str | None, str | None, int, int]:
        """(previous id, next id, position, total) of ``sample_id`` in the queue ``flt``."""
        ids = [r["sample"] for r in self.select(flt)]
        try:
            i = ids.index(sample_id)
        except ValueError:
            return (None, ids[0] if ids else None, -1, len(ids))
        return (ids[i - 1] if i > 0 else None, ids[i + 1] if i + 1 < len(ids) else None, i, len(ids))

    # ------------------------------------------------------------------ overview

    def overview(self) -> dict[str, Any]:
        """Counts by status and by review decision, the per-label health table, the
        given -> suggested confusion of what is reported wrong, and the confidence
        histogram per status."""
        with self._lock:
            status = Counter(r["status"] for r in self.rows)
            decisions = Counter(_decision(r, self._states.get(r["sample"])) for r in self.rows)
            labels: dict[str, dict[str, Any]] = {}
            confusion: Counter[tuple[str, str]] = Counter()
            hist: dict[str, list[int]] = {}
            for r in self.rows:
                lab = labels.setdefault(r["given_label"], {"label": r["given_label"], "samples": 0, "flagged": 0, "suspect": 0, "verified": 0, "reviewed": 0, "suggested_into": 0})
                lab["samples"] += 1
                if r["status"] in _WRONG:
                    lab[r["status"]] += 1
                    if r.get("suggested_label") and r["suggested_label"] != r["given_label"]:
                        confusion[(r["given_label"], r["suggested_label"])] += 1
                if r.get("basis") == "verified":
                    lab["verified"] += 1
                if _decision(r, self._states.get(r["sample"])) != "pending":
                    lab["reviewed"] += 1
                conf = r.get("confidence")
                if conf is not None:
                    b = min(HISTOGRAM_BINS - 1, max(0, int(float(conf) * HISTOGRAM_BINS)))
                    hist.setdefault(r["status"], [0] * HISTOGRAM_BINS)[b] += 1
            for r in self.rows:
                sug = r.get("suggested_label")
                if r["status"] in _WRONG and sug in labels and sug != r["given_label"]:
                    labels[sug]["suggested_into"] += 1
        found = self.summary.get("labels") or {}
        generic = found.get("generic") or {}
        same = found.get("same_object") or []
        per_label = self.summary.get("per_label") or {}
        table = []
        for name in sorted(labels):
            lab = labels[name]
            info = per_label.get(name) or {}
            kind = "generic" if name in generic else str(info.get("kind") or "specific")
            mixed = [list(p) if isinstance(p, (list, tuple)) else p for p in same if isinstance(p, (list, tuple)) and name in p]
            lab.update(kind=kind, same_object=mixed, verified_share=round(lab["verified"] / lab["samples"], 3) if lab["samples"] else 0.0)
            table.append(lab)
        return {
            "audit": str(self.audit_dir),
            "store": self.store.uri,
            "dataset": self.summary.get("dataset"),
            "samples": len(self.rows),
            "status": {s: status.get(s, 0) for s in ("flagged", "suspect", "ok", "plausible", "unverifiable", "unreadable")},
            "decisions": dict(sorted(decisions.items())),
            "labels": table,
            "generic": sorted(generic),
            "confusion": [{"given": g, "suggested": s, "count": n} for (g, s), n in sorted(confusion.items(), key=lambda kv: (-kv[1], kv[0]))],
            "histogram": {"bins": HISTOGRAM_BINS, "counts": hist},
        }

    def known_labels(self) -> list[str]:
        """Every label the audit or the store knows (for completion)."""
        names = {r["given_label"] for r in self.rows} | {r["suggested_label"] for r in self.rows if r.get("suggested_label")}
        names |= {s.label for s in self._states.values() if s.label}
        return sorted(n for n in names if n)
