"""The verdicts: every image's, decided jointly by the label model
(:mod:`consist.audit.labelmodel`) from what the journal holds.

Statuses (``AuditRow.status``), by what the verdict rests on:

* ``flagged``: the label is more likely wrong than right (P(wrong) above
  ``flag_probability``), on verified evidence: the image's group of verified views,
  or its label names no object (a generic label);
* ``suspect``: likewise, but no pair verifies the image: its neighbours' labels say
  so, weighted by how accurate retrieval has proved on this collection;
* ``ok``: the label is confirmed by the image's group of verified views;
* ``plausible``: no pair verifies the image, and retrieval does not contradict it;
* ``unverifiable``: the image has no neighbour at all;
* ``unreadable``: the image could not be read (the reason names the file).

``confidence`` is always P(given label wrong), a probability (its calibration is
measured by benchmarks/bench_audit.py); ``suggestion_confidence`` is the posterior of
the suggested label, which may be low even when the given label is surely wrong (a
generic label on a photo that verifies with nothing).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import attrs

from consist.audit.config import AuditConfig
from consist.audit.labelmodel import LabelFindings, LabelModelConfig, LabelModelInput, LabelModelResult, fit_label_model, pair_inliers
from consist.contracts.evidence import PAIRS_KEY

__all__ = ["ANSWERED_STATUSES", "FLAGGED_STATUSES", "STATUSES", "AuditRow", "Decisions", "decide_all", "label_model_config", "unreadable_row"]

#: Sample statuses, in the order reports list them.
STATUSES = ("flagged", "suspect", "ok", "plausible", "unverifiable", "unreadable")
#: Statuses whose label is reported as wrong.
FLAGGED_STATUSES = frozenset({"flagged", "suspect"})
#: Statuses that carry an answer about the label.
ANSWERED_STATUSES = frozenset({"flagged", "suspect", "ok", "plausible"})


@attrs.frozen
class AuditRow:
    """One sample's verdict (a row of ``audit.csv``, the core of ``audit.jsonl``).

    ``confidence`` is P(given label wrong); ``suggested_label`` is the most probable
    other label when flagged (the given label otherwise), ``suggestion_confidence``
    its posterior. ``basis``: ``verified`` (a group of verified views), ``retrieval``
    (neighbours' labels only), ``none``. ``label_kind``: ``generic`` when the given
    label names no object, else ``specific``. ``group_size``: images in its verified
    group; ``witnesses``: the others in it that carry the shown label (the suggestion
    when flagged). ``evidence_*`` name the strongest verified neighbour carrying the
    shown label.
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
    basis: str = "none"
    label_kind: str = "specific"
    suggestion_confidence: float | None = None
    group_size: int = 0
    witnesses: int = 0
    meta: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Decisions:
    """All verdicts of an audit, the label-level findings and the fitted model."""

    rows: tuple[AuditRow, ...]
    findings: LabelFindings
    model: dict[str, object]


def unreadable_row(sample: str, label: str, error: str, meta: Mapping[str, Any] | None = None) -> AuditRow:
    return AuditRow(sample=sample, given_label=label, suggested_label=None, flagged=False, confidence=None, status="unreadable", reason=error, meta=dict(meta or {}))


def label_model_config(cfg: AuditConfig) -> LabelModelConfig:
    """The label model's parameters from the audit's."""
    return LabelModelConfig(
        link_inliers=cfg.weak_inliers,
        generic_min_connected=cfg.generic_min_connected,
        generic_max_agreement=cfg.generic_max_agreement,
        generic_labels=cfg.generic_labels,
        detect_generic=cfg.detect_generic,
        flag_probability=cfg.flag_probability,
    )


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))


def _vote_logits(record: Mapping[str, Any], independent: frozenset[str]) -> dict[str, float]:
    """Log-odds per label from the votes of checkers whose evidence is independent of
    the pairs: they read pixels but published no pair evidence in this record (an
    LMM's answers); a checker's pairs already enter through the groups."""
    votes = list((record.get("decision") or {}).get("votes") or ())
    with_pairs = {v.get("checker") for v in votes if (v.get("evidence") or {}).get(PAIRS_KEY)}
    out: dict[str, float] = {}
    for v in votes:
        if v.get("checker") in independent and v.get("checker") not in with_pairs and isinstance(v.get("label"), str):
            out[v["label"]] = out.get(v["label"], 0.0) + float(v.get("confidence", 1.0)) * _logit(float(v.get("support", 0.5)))
    return out


class _Edge(NamedTuple):
    """What the decision reads of a journal edge, as the journal has it.

    The outline and the matched points stay in the journal (keeping them for every
    sample tripled the parent's memory at 10^4 images), and a tuple with the neighbour's
    id interned, not a dict of these fields (~5 KB per image at 10 edges: 50 MB of the
    parent's peak at 10^4 images).
    """

    b: str
    inliers: Any
    verified: Any
    coverage: Any
    ratio: Any
    b_label: Any


@attrs.frozen
class _Compact:
    """What the decision keeps of a journal record (O(k) per sample)."""

    uri: str | None
    meta: dict[str, Any]
    neighbours: tuple[tuple[str, int], ...]
    edges: tuple[_Edge, ...]
    logits: dict[str, float]


def decide_all(
    records: Iterable[Mapping[str, Any]], given: Mapping[str, str], metas: Mapping[str, Mapping[str, Any]], failures: Mapping[str, str], cfg: AuditConfig, *, independent: frozenset[str] = frozenset()
) -> Decisions:
    """Every sample's verdict. ``records``: each sample's journal record once (any
    order: the result depends only on their content); ``given``: the dataset's labels,
    in the order the rows come back;
    ``independent``: checkers whose votes enter as independent evidence."""
    kept: dict[str, _Compact] = {}
    errors: dict[str, str] = dict(failures)
    for rec in records:
        sid = str(rec["id"])
        if sid not in given or sid in kept or sid in errors:
            continue
        if rec.get("error"):
            errors[sid] = str(rec["error"])
            continue
        edges = tuple(
            sorted(
                (_Edge(sys.intern(str(e["b"])), e.get("inliers"), e.get("verified"), e.get("coverage"), e.get("ratio"), e.get("b_label")) for e in rec.get("edges", ()) if e.get("b") in given),
                key=lambda e: (e.b, -int(e.inliers or 0)),
            )
        )
        neighbours = tuple((sys.intern(str(n["id"])), int(n["rank"])) for n in rec.get("neighbours", ()) if n.get("id") in given)
        kept[sid] = _Compact(uri=rec.get("uri"), meta=dict(rec.get("meta") or {}), neighbours=neighbours, edges=edges, logits=_vote_logits(rec, independent))
    readable = {sid: given[sid] for sid in sorted(kept)}
    data = LabelModelInput(
        given=readable,
        neighbours={sid: c.neighbours for sid, c in kept.items()},
        inliers=pair_inliers((sid, ({"b": e.b, "inliers": e.inliers} for e in c.edges)) for sid, c in sorted(kept.items())),
        logits={sid: c.logits for sid, c in kept.items() if c.logits},
    )
    result = fit_label_model(data, label_model_config(cfg)) if readable else None
    # each group's label counts once (a row's reason and witnesses read them): per row,
    # they cost O(group) and a group of g images O(g^2) — 10^10 for a generic label
    # on 10^5 photos of one landmark
    tallies: dict[int, Counter[str]] = {}
    rows = []
    for sid in given:  # rows in the caller's order; the model itself reads sorted ids
        if sid in kept and result is not None:
            g = result.group[sid]
            if g not in tallies:
                tallies[g] = Counter(readable[m] for m in result.group_members[g])
            rows.append(_row(sid, given[sid], kept[sid], result, cfg, readable, tallies[g]))
        else:
            rows.append(unreadable_row(sid, given[sid], errors.get(sid, f"{sid}: not verified"), metas.get(sid)))
    findings = result.findings if result is not None else LabelFindings(generic={}, same_object=[], label_stats={})
    return Decisions(rows=tuple(rows), findings=findings, model=dict(result.info) if result is not None else {})


def _near_duplicates(sid: str, label: str, c: _Compact, cfg: AuditConfig) -> list[str]:
    out = {e.b for e in c.edges if e.verified and (e.coverage or 0) >= cfg.near_duplicate_coverage and (e.ratio or 0) >= cfg.near_duplicate_ratio and e.b_label != label}
    return sorted(out - {sid})


def _strongest(c: _Compact, label: str | None, given: Mapping[str, str]) -> _Edge | None:
    best = None
    for e in c.edges:
        if e.verified and given.get(e.b) == label and (best is None or int(e.inliers) > int(best.inliers)):
            best = e
    return best


def _counts(c: Mapping[str, int]) -> str:
    """``4 'rocket', 1 'astronaut'``: a group's labels, most frequent first."""
    return ", ".join(f"{n} {label!r}" for label, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def _row(sid: str, label: str, c: _Compact, m: LabelModelResult, cfg: AuditConfig, given: Mapping[str, str], tally: Mapping[str, int]) -> AuditRow:
    members = m.group_members[m.group[sid]]
    generic = label in m.findings.generic
    basis = m.basis[sid]
    p_wrong = m.p_wrong[sid]
    flagged = generic or p_wrong > cfg.flag_probability
    suggestion = m.suggestion[sid]
    sprob = m.suggestion_probability[sid]
    verified = sum(1 for e in c.edges if e.verified)
    dups = _near_duplicates(sid, label, c, cfg)
    if flagged:
        status = "flagged" if (basis == "verified" or generic) else "suspect"
    elif basis == "verified":
        status = "ok"
    elif basis == "retrieval":
        status = "plausible"
    else:
        status = "unverifiable"
    shown = suggestion if flagged else label
    best = _strongest(c, shown, given)
    p_s = "" if sprob is None else f" (posterior {sprob:.2f})"
    if generic:
        info = m.findings.generic[label]
        why = "declared generic" if info.get("declared") else f"its {info['connected']} verified images verify with images of other labels, {info['agreeing']} with its own"
        reason = f"{label!r} names no particular object ({why})"
        if suggestion is not None:
            src = (
                f"its group of {len(members)} verified images ({_counts(tally)})" if len(members) >= 2 else ("its neighbours' labels" if basis == "retrieval" else "the collection's label frequencies")
            )
            reason += f"; most probable specific label {suggestion!r}{p_s}, from {src}"
    elif status == "flagged":
        reason = f"looks like {suggestion!r}, not {label!r}: its group of {len(members)} verified images carries {_counts(tally)}; P(wrong) {p_wrong:.2f}"
    elif status == "suspect":
        reason = f"retrieval suggests {suggestion!r}{p_s}, not {label!r}: no neighbour verifies it; P(wrong) {p_wrong:.2f} from its neighbours' labels, weighted by how accurate retrieval proved on this collection"
    elif status == "ok":
        reason = f"{label!r} confirmed by its group of {len(members)} verified images ({_counts(tally)}); P(wrong) {p_wrong:.2f}"
    elif status == "plausible":
        reason = f"{label!r} plausible: no neighbour verifies it, its neighbours' labels do not contradict it; P(wrong) {p_wrong:.2f}"
    else:
        reason = "no neighbour to verify it against"
    if best is not None:
        reason += f"; strongest verified neighbour {best.b} ({best.inliers} inliers)"
    if dups:
        reason += f"; near-duplicate of {', '.join(dups[:3])}{' ...' if len(dups) > 3 else ''} carrying another label"
    return AuditRow(
        sample=sid,
        given_label=label,
        suggested_label=suggestion if flagged else label,
        flagged=flagged,
        confidence=round(p_wrong, 4),
        status=status,
        reason=reason,
        evidence_neighbour=None if best is None else best.b,
        evidence_label=None if best is None else given.get(best.b),
        evidence_inliers=None if best is None else int(best.inliers),
        verified_neighbours=verified,
        near_duplicates=tuple(dups),
        basis=basis,
        label_kind="generic" if generic else "specific",
        suggestion_confidence=None if sprob is None else round(sprob, 4),
        group_size=len(members),
        witnesses=0 if shown is None else tally.get(shown, 0) - (1 if shown == label else 0),  # the others in its group carrying it
        meta=dict(c.meta),
    )
