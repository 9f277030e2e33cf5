"""Review actions as store writes: each is a history entry with user provenance, so
``consist undo``, ``consist history`` and ``consist export`` see exactly what the page
did, and the page's undo is the store's undo.

Reasons start with :data:`REVIEW_REASON` (one action) or ``review batch <id>:`` (a bulk
action: "undo last" reverts the whole batch, as the person did it in one click).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any

import attrs

from consist.aliases import resolve_label
from consist.contracts.store import AliasStore, Store
from consist.errors import ConsistError
from consist.records import HistoryEntry, Provenance, Region, to_dict
from consist.review.audit_index import AuditIndex, QueueFilter

__all__ = ["BULK_MAX", "REVIEW_REASON", "NewLabel", "ReviewActions", "ReviewError", "StaleView"]

#: Prefix of the history reason of every single review action.
REVIEW_REASON = "review"
#: Most samples one bulk action may change (a guard against a filter that matches all).
BULK_MAX = 10_000
#: Entries of one group (a batch, a sentence) are written in one transaction, within
#: this many seconds of each other; the same sentence said again later is another action.
GROUP_SECONDS = 5.0
_BATCH = re.compile(r"^review batch ([0-9a-f]{8,}):")


class ReviewError(ConsistError):
    """A review action that cannot be done (the message says why; nothing was written)."""


class StaleView(ReviewError):
    """The page decided on a label that has changed since it was shown."""


class NewLabel(ReviewError):
    """A relabel to a label nobody used yet (a typo?): done only when confirmed."""


def entry_json(e: HistoryEntry) -> dict[str, Any]:
    return to_dict(e)


@attrs.frozen
class BulkResult:
    batch: str
    entries: tuple[HistoryEntry, ...]
    skipped: int


class ReviewActions:
    """The writes of the review app over one store, for the samples of one audit."""

    def __init__(self, store: Store, index: AuditIndex) -> None:
        self.store = store
        self.index = index

    # ------------------------------------------------------------------ helpers

    def _row(self, sample_id: str) -> dict[str, Any]:
        row = self.index.row(sample_id)
        if row is None:
            raise ReviewError(f"no sample {sample_id!r} in this audit")
        return row

    def _relabel(self, sample_id: str, label: str, reason: str) -> HistoryEntry | None:
        return self.store.relabel(sample_id, label, provenance=Provenance.USER, reason=reason)

    def _check_unchanged(self, sample_id: str, expect_label: str | None) -> None:
        """Refuse a decision made on a stale view: the page sends the label it showed,
        and another tab, reviewer or terminal may have changed it since."""
        if expect_label is None:
            return
        sample = self.store.get(sample_id)
        now = None if sample is None else sample.label
        if now != expect_label:
            last = self.store.history(sample_id=sample_id, limit=1)
            when = f" (history #{last[0].seq}, {last[0].reason or last[0].action})" if last else ""
            raise StaleView(f"{sample_id} was changed elsewhere since this page showed it: its label is now {now!r}, not {expect_label!r}{when}; nothing was changed (reload to see it)")

    def resolve(self, label: str) -> str:
        """A typed label or alias -> the canonical label (an alias of the store maps to
        its label; a new name is a new label)."""
        label = label.strip()
        if not label or len(label) > 200 or any(ord(c) < 32 for c in label):
            raise ReviewError("a label must be 1-200 printable characters")
        return resolve_label(label, self.store, labels=self.index.known_labels()).label

    def _done(self, entries: Sequence[HistoryEntry | None]) -> list[HistoryEntry]:
        got = [e for e in entries if e is not None]
        self.index.refresh()
        return got

    # ------------------------------------------------------------------ actions

    def accept(self, sample_id: str, *, expect_label: str | None = None) -> list[HistoryEntry]:
        """Relabel to the audit's suggestion."""
        row = self._row(sample_id)
        self._check_unchanged(sample_id, expect_label)
        sug = row.get("suggested_label")
        if not sug or sug == row["given_label"]:
            raise ReviewError(f"{sample_id}: the audit suggests no other label to accept")
        conf = row.get("confidence")
        why = f"{REVIEW_REASON}: accepted the suggestion {sug!r}" + (f" (P(wrong) {conf:.2f})" if isinstance(conf, (int, float)) else "")
        return self._done([self._relabel(sample_id, sug, why)])

    def keep(self, sample_id: str, *, expect_label: str | None = None) -> list[HistoryEntry]:
        """A person confirms the given label (rejects the suggestion): the label gets
        user provenance, so no later automatic change may replace it."""
        row = self._row(sample_id)
        self._check_unchanged(sample_id, expect_label)
        entry = self._relabel(sample_id, row["given_label"], f"{REVIEW_REASON}: kept the given label {row['given_label']!r}")
        if entry is None and isinstance(self.store, AliasStore):  # already the person's label: record the decision itself
            entry = self.store.annotate(sample_id, attributes={"reviewed": "kept"}, provenance=Provenance.USER, reason=f"{REVIEW_REASON}: kept the given label")
        return self._done([entry])

    def relabel(self, sample_id: str, label: str, *, expect_label: str | None = None, create: bool = False) -> list[HistoryEntry]:
        """Relabel to ``label`` (or the label an alias names). A label no sample
        carries and the audit never suggested is refused (:class:`NewLabel`) unless
        ``create``: a typo must not silently become a class."""
        self._row(sample_id)
        self._check_unchanged(sample_id, expect_label)
        canonical = self.resolve(label)
        if not create and canonical not in set(self.index.known_labels()) | set(self.store.labels()):
            raise NewLabel(f"{canonical!r} is not a label of this store nor an alias of one; confirm to create a new label")
        return self._done([self._relabel(sample_id, canonical, f"{REVIEW_REASON}: relabelled to {canonical!r}" + (f" (typed {label.strip()!r})" if canonical != label.strip() else ""))])

    def set_region(self, sample_id: str, region: Region | None) -> list[HistoryEntry]:
        """Where the labelled object is (a box or polygon in the image's pixels); later
        verification asks about this region only."""
        self._row(sample_id)
        what = "cleared the object's region" if region is None else ("drew the object's outline" if region.polygon is not None else "drew the object's box")
        return self._done([self.store.set_region(sample_id, region, provenance=Provenance.USER, reason=f"{REVIEW_REASON}: {what}")])

    def bulk_candidates(self, flt: QueueFilter) -> list[dict[str, Any]]:
        """The samples :meth:`bulk_accept` would change."""
        return [r for r in self.index.select(flt) if r.get("suggested_label") and r["suggested_label"] != r["given_label"] and self.index.view(r)["decision"] == "pending"]

    def bulk_accept(self, flt: QueueFilter, *, expect: int | None = None) -> BulkResult:
        """Accept the suggestion of every sample the filter selects that is still
        pending and has another suggested label, in one transaction (all or nothing).
        ``expect``: the count the person saw; refused if the selection changed."""
        rows = self.bulk_candidates(flt)
        if expect is not None and expect != len(rows):
            raise ReviewError(f"the selection now holds {len(rows)} samples, not the {expect} shown; reload and try again")
        if len(rows) > BULK_MAX:
            raise ReviewError(f"{len(rows)} samples selected; one bulk action changes at most {BULK_MAX}")
        batch = secrets.token_hex(6)
        entries: list[HistoryEntry | None] = []
        with self.store.transaction():
            for r in rows:
                entries.append(self._relabel(r["sample"], r["suggested_label"], f"review batch {batch}: accepted the suggestion {r['suggested_label']!r}"))
        done = self._done(entries)
        return BulkResult(batch, tuple(done), len(rows) - len(done))

    def tell(self, sample_id: str, sentence: str, *, apply: bool = True) -> dict[str, Any]:
        """A sentence about the sample, understood by the registered interpreter (the
        same as ``consist tell``: consist-semantic's grammar or LMM)."""
        from consist import plugins

        self._row(sample_id)
        if not sentence.strip() or len(sentence) > 2000:
            raise ReviewError("say something (at most 2,000 characters)")
        found = plugins.interpreters()
        if not found:
            raise ReviewError("no sentence interpreter is installed (pip install consist-semantic)")
        interpreter = found.get("tell") or found[sorted(found)[0]]
        try:
            outcome = interpreter.interpret(self.store, sentence, sample_id, apply=apply)
        except ReviewError:
            raise
        except ConsistError as exc:  # not understood (the contract's one-line error); nothing was written
            raise ReviewError(str(exc)) from exc
        self.index.refresh()
        return {
            "sentence": outcome.sentence,
            "parser": outcome.parser,
            "actions": list(outcome.actions),
            "warnings": list(outcome.warnings),
            "entries": [entry_json(e) for e in outcome.entries],
            "applied": apply,
        }

    # --------------------------------------------------------------------- undo

    def undo(self, seq: int) -> list[HistoryEntry]:
        return self._done([self.store.undo(int(seq))])

    def undo_group(self, seqs: Sequence[int]) -> list[HistoryEntry]:
        """Undo the entries of one action of the page (a batch, a sentence of several
        changes), newest first, in one transaction: all or nothing."""
        out: list[HistoryEntry | None] = []
        with self.store.transaction():
            for seq in sorted({int(s) for s in seqs}, reverse=True):
                out.append(self.store.undo(seq))
        return self._done(out)

    def last_action(self) -> list[HistoryEntry]:
        """The newest person's action still in effect (all of it, for a batch or a
        sentence of several changes): what "undo" on the page reverts."""
        newest = self.store.history(limit=200)
        group: list[HistoryEntry] = []
        for e in newest:
            if e.action in ("undo", "conflict") or e.undone_by is not None or e.provenance != Provenance.USER.value:
                if group:
                    break
                continue
            if not group:
                group.append(e)
                key = _group_key(e)
                if key is None:
                    break
                continue
            if _group_key(e) == _group_key(group[0]) and abs(e.ts - group[0].ts) < GROUP_SECONDS:
                group.append(e)
            else:
                break
        return group

    def undo_last(self) -> list[HistoryEntry]:
        """Undo the newest person's action (a batch or a sentence as a whole)."""
        group = self.last_action()
        if not group:
            raise ReviewError("nothing to undo")
        out: list[HistoryEntry | None] = []
        with self.store.transaction():
            for e in group:  # newest first: later changes of a sample are undone first
                out.append(self.store.undo(e.seq))
        return self._done(out)


def _group_key(e: HistoryEntry) -> str | None:
    """Entries made by one click: a batch (its id) or one sentence (its reason)."""
    m = _BATCH.match(e.reason or "")
    if m:
        return "batch:" + m.group(1)
    if (e.reason or "").startswith("told:"):
        return "told:" + e.reason
    return None
