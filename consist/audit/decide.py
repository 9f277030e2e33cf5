"""The final, leave-one-out verdict on one sample.

The engine's checkers already voted on "this sample shows its given label" against
the labels of its neighbours (``Decision.votes``). Once every sample has been
verified, the verified graph adds what no single pair can see: propagation through
intermediate views, and the coherence of each label (see :mod:`consist.audit.graph`).
Its opinion joins the others as the votes of a pseudo-checker ``graph``, and the
same aggregation hook the engine uses (``consist_aggregate``; a plugin may replace
it) turns prior + votes into the verdict:

* ``flagged``: the winning label differs from the given one and the given label's
  posterior is at most ``1 - flag_confidence``; the winner is the suggestion;
* ``ok``: the given label won;
* ``unverifiable``: no checker verified the sample against anything (no verified
  neighbour, nothing propagated), or the evidence is too weak either way (the
  given label keeps the lead with a posterior under 0.5): nothing can say it is
  right or wrong;
* ``unreadable``: the image could not be read (the reason names the file).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from consist.audit.candidates import build_prediction, prior_with_penalty
from consist.audit.config import AuditConfig
from consist.audit.graph import LabelEvidence
from consist.records import Query, Vote, from_dict

__all__ = ["GRAPH_CHECKER", "STATUSES", "AuditRow", "decide", "graph_votes", "unreadable_row"]

#: Sample statuses, in the order reports list them.
STATUSES = ("flagged", "ok", "unverifiable", "unreadable")
#: Name of the votes the verified graph casts.
GRAPH_CHECKER = "graph"

Aggregate = Callable[[Any, Sequence[Vote]], Any]


@attrs.frozen
class AuditRow:
    """One sample's verdict (a row of ``audit.csv``, the core of ``audit.jsonl``).

    ``evidence_*`` name the strongest verified neighbour behind the verdict (of
    the suggested label when flagged, of the given label otherwise).
    """

    sample: str
    given_label: str
    suggested_label: str | None
    flagged: bool
    confidence: float | None
    status: str
    reason: str
    evidence_neighbour: str | None = None
    evidence_label: str | None = None
    evidence_inliers: int | None = None
    verified_neighbours: int = 0
    near_duplicates: tuple[str, ...] = ()
    community: int | None = None
    label_incoherence: float | None = None
    scores: dict[str, float] = attrs.field(factory=dict)
    meta: dict[str, Any] = attrs.field(factory=dict)


def graph_votes(given: str, ev: LabelEvidence, cfg: AuditConfig) -> list[Vote]:
    """The graph's votes: each label's smoothed share of the propagated mass, with a
    confidence that grows with the total mass (one strong verified neighbour ~0.6)."""
    import math

    total = ev.total
    if total <= 0:
        return []
    alpha = 0.5
    confidence = 1.0 - math.exp(-total / cfg.graph_confidence_scale)
    votes = []
    for label in dict.fromkeys([given, *sorted(ev.mass, key=lambda k: -ev.mass[k])]):
        support = (ev.mass.get(label, 0.0) + alpha * 0.5) / (total + alpha)
        votes.append(
            Vote(
                checker=GRAPH_CHECKER,
                label=label,
                support=min(max(support, 0.0), 1.0),
                confidence=confidence,
                evidence={"mass": round(ev.mass.get(label, 0.0), 4), "total_mass": round(total, 4), "reached": len(ev.reached), "community_size": ev.community_size},
            )
        )
    return votes


def _near_duplicates(record: Mapping[str, Any], cfg: AuditConfig) -> list[str]:
    out = []
    for e in record.get("edges", ()):
        if e.get("verified") and (e.get("coverage") or 0) >= cfg.near_duplicate_coverage and (e.get("ratio") or 0) >= cfg.near_duplicate_ratio and e.get("b_label") != record["label"]:
            out.append(e["b"])
    return sorted(set(out))


def _strongest(record: Mapping[str, Any], label: str | None) -> dict[str, Any] | None:
    best = None
    for e in record.get("edges", ()):
        if e.get("verified") and e.get("b_label") == label and (best is None or e["inliers"] > best["inliers"]):
            best = e
    return best


def unreadable_row(sample: str, label: str, error: str, meta: Mapping[str, Any] | None = None) -> AuditRow:
    return AuditRow(sample=sample, given_label=label, suggested_label=None, flagged=False, confidence=None, status="unreadable", reason=error, meta=dict(meta or {}))


def decide(record: Mapping[str, Any], ev: LabelEvidence | None, incoherence: Mapping[str, float], cfg: AuditConfig, aggregate: Aggregate, *, label_only: frozenset[str] = frozenset()) -> AuditRow:
    """The verdict on one verified sample (``record``: a journal record of
    :func:`consist.audit.work.verify_chunk`). Votes of the ``label_only`` checkers
    (those that read no pixels, ``reads_pixels = False``: the neighbour label vote
    only echoes retrieval) alone do not make a sample verifiable."""
    sid, given = record["id"], record["label"]
    meta = record.get("meta") or {}
    if record.get("error"):
        return unreadable_row(sid, given, record["error"], meta)
    votes = [from_dict(Vote, v) for v in (record.get("decision") or {}).get("votes", ())]
    incoh = incoherence.get(given, 0.0)
    share = None if ev is None else ev.community_share
    prior = prior_with_penalty(cfg.given_prior, 0.0 if share is None else cfg.incoherence_weight * (1.0 - share))
    from consist.records import Neighbour, Sample

    neighbours = [Neighbour(Sample(id=n["id"], label=n["label"]), n["similarity"], n["rank"]) for n in record.get("neighbours", ())]
    prediction = build_prediction(Query(id=sid, uri=record.get("uri")), given, neighbours, given_prior=prior, other_prior=cfg.other_prior)
    gvotes = graph_votes(given, ev, cfg) if ev is not None else []
    result = aggregate(prediction, [*votes, *gvotes])
    verified = sum(1 for e in record.get("edges", ()) if e.get("verified"))
    strong = any(v.support > 0.5 and v.checker not in label_only for v in votes) or bool(gvotes)
    dups = _near_duplicates(record, cfg)
    common = dict(
        sample=sid,
        given_label=given,
        verified_neighbours=verified,
        near_duplicates=tuple(dups),
        community=None if ev is None else ev.community,
        label_incoherence=round(incoh, 4),
        scores={k: round(v, 4) for k, v in result.scores.items()},
        meta=dict(meta),
    )
    if not strong:
        tried = len(record.get("edges", ()))
        why = f"no neighbour verifies it ({tried} tried, none with {cfg.min_inliers}+ inliers)" if tried else "no neighbour to verify it against"
        return AuditRow(suggested_label=None, flagged=False, confidence=None, status="unverifiable", reason=why + _dup_note(dups), **common)
    label, conf = result.label, float(result.confidence)
    p_given = _posterior(result.scores, given)
    flagged = label != given and p_given <= 1.0 - cfg.flag_confidence
    if not flagged and p_given < 0.5:
        why = f"evidence too weak to confirm or contradict {given!r} (posterior {p_given:.2f}; best other label {label!r})" if label != given else f"evidence too weak to confirm {given!r} (posterior {p_given:.2f})"
        return AuditRow(suggested_label=None, flagged=False, confidence=round(p_given, 4), status="unverifiable", reason=why + _dup_note(dups), **common)
    shown = label if flagged else given
    best = _strongest(record, shown)
    if best is None and ev is not None:
        best = _strongest_reached(record, ev, shown)
    reason = _reason(given, label, flagged, best, ev, record, incoh) + _dup_note(dups)
    return AuditRow(
        suggested_label=label if flagged else given,
        flagged=flagged,
        confidence=round(conf, 4),
        status="flagged" if flagged else "ok",
        reason=reason,
        evidence_neighbour=None if best is None else best["b"],
        evidence_label=None if best is None else best["b_label"],
        evidence_inliers=None if best is None else best.get("inliers"),
        **common,
    )


def _posterior(scores: Mapping[str, float], label: str) -> float:
    """Softmax probability of ``label`` with the aggregation's implicit null class."""
    import math

    if label not in scores:
        return 0.0
    m = max(0.0, *scores.values())
    denom = math.exp(-m) + sum(math.exp(v - m) for v in scores.values())
    return math.exp(scores[label] - m) / denom


def _strongest_reached(record: Mapping[str, Any], ev: LabelEvidence, label: str) -> dict[str, Any] | None:
    labels = record.get("_labels_of_reached") or {}
    for j, s in ev.reached.items():
        if labels.get(j) == label:
            return {"b": j, "b_label": label, "inliers": None, "strength": s}
    return None


def _dup_note(dups: Sequence[str]) -> str:
    if not dups:
        return ""
    return f"; near-duplicate of {', '.join(dups[:3])}{' ...' if len(dups) > 3 else ''} carrying another label"


def _reason(given: str, label: str, flagged: bool, best: Mapping[str, Any] | None, ev: LabelEvidence | None, record: Mapping[str, Any], incoh: float) -> str:
    edges = [e for e in record.get("edges", ()) if e.get("verified")]
    same = sum(1 for e in edges if e.get("b_label") == given)
    other = len(edges) - same
    direct = f"{len(edges)} verified neighbours ({same} labelled {given!r}, {other} other)"
    via = ""
    if best is not None:
        via = f"; strongest: {best['b']} ({best['inliers']} inliers)" if best.get("inliers") is not None else f"; reached through intermediate views: {best['b']}"
    prop = ""
    if ev is not None and ev.total > 0:
        share = ev.mass.get(label, 0.0) / ev.total
        prop = f"; propagation gives {label!r} {share:.0%} of {len(ev.reached)} reached views"
    cshare = None if ev is None else ev.community_share
    coh = f"; the other images labelled {given!r} lie in other communities ({1 - cshare:.0%} of them)" if cshare is not None and cshare < 0.5 else ""
    head = f"looks like {label!r}, not {given!r}" if flagged else (f"{given!r} confirmed" if label == given else f"{given!r} kept ({label!r} not confident enough)")
    return head + ": " + direct + via + prop + coh
