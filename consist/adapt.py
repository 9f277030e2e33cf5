"""Database adaptation (decisions flow back into the store) and user feedback.

Adaptation adds a confidently verified query to the store as a sample with ``auto``
provenance, so that the next similar query finds it. User feedback goes through
:func:`correct` with ``user`` provenance, the highest trust: no automatic change
replaces it. Every write is a history entry (``consist history``/``consist undo``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consist.errors import SampleNotFound
from consist.images import ARTEFACT_SCHEME, encode_png
from consist.records import Decision, HistoryEntry, Prediction, Provenance, Region, RunStatus, Sample

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = ["DEFAULT_ADAPT_THRESHOLD", "adapt_decision", "correct"]

#: Minimum decision confidence before a query is written back (EngineConfig.adapt_threshold).
DEFAULT_ADAPT_THRESHOLD = 0.9


def _query_uri(prediction: Prediction, store: Store) -> str | None:
    q = prediction.query
    if q.uri is not None:
        return q.uri
    if q.image is None:
        return None
    store.put_artefact(q.id, "image", encode_png(q.image))
    return f"{ARTEFACT_SCHEME}{q.id}/image"


def adapt_decision(decision: Decision, prediction: Prediction, store: Store, *, threshold: float = DEFAULT_ADAPT_THRESHOLD) -> str:
    """Write a verified decision back; return what was done, or why not."""
    if decision.confidence < threshold:
        return f"not adapted: confidence {decision.confidence:.3f} < {threshold:g}"
    supporters = sorted({v.checker for v in decision.votes_for(decision.label) if v.support > 0.5})
    if not supporters or not any(r.status is RunStatus.RAN for r in decision.runs):
        return "not adapted: no checker supported the label"
    q = prediction.query
    with store.transaction():
        sample = Sample(
            id=q.id,
            uri=_query_uri(prediction, store),
            label=decision.label,
            provenance=Provenance.AUTO,
            region=q.region,
            embedding=q.embedding,
            meta={**q.meta, "verified_by": supporters, "confidence": round(decision.confidence, 6), "predicted_label": decision.predicted_label},
        )
        entries = store.put([sample], reason=f"verified by {', '.join(supporters)} at confidence {decision.confidence:.3f}", on_conflict="skip")
    if not entries:
        return f"not adapted: {q.id} is already stored as {decision.label!r}"
    e = entries[0]
    if e.action == "conflict":
        return f"not adapted: {q.id} keeps its {e.before['provenance'] if e.before else ''} label {e.before['label'] if e.before else ''!r}"
    return f"{'added' if e.action == 'add' else 'updated'} {q.id} as {decision.label!r} (auto, #{e.seq})"


def correct(
    store: Store,
    sample_id: str,
    label: str | None = None,
    *,
    region: Region | None = None,
    uri: str | None = None,
    reason: str = "user feedback",
) -> list[HistoryEntry]:
    """A person's correction: a label, a region (box or polygon), or both.

    Creates the sample when it is not in the store (``uri`` is then needed to find
    the pixels later). Carries ``user`` provenance, so it overrides any label and is
    never overwritten automatically. Returns the history entries written.
    """
    if label is None and region is None:
        raise ValueError("a correction needs a label, a region, or both")
    entries: list[HistoryEntry] = []
    with store.transaction():
        existing = store.get(sample_id)
        if existing is None:
            if uri is None:
                raise SampleNotFound(f"{store.uri}: no sample {sample_id!r}; give its image uri to add it")
            entries += store.put([Sample(id=sample_id, uri=uri, label=label, provenance=Provenance.USER, region=region)], reason=reason)
            return entries
        if label is not None:
            e = store.relabel(sample_id, label, provenance=Provenance.USER, reason=reason, force=True)
            if e is not None:
                entries.append(e)
        if region is not None:
            e = store.set_region(sample_id, region, provenance=Provenance.USER, reason=reason)
            if e is not None:
                entries.append(e)
    return entries
