"""The audit's parameters, each with its default and where it comes from."""

from __future__ import annotations

from typing import Any

import attrs

from consist.options import in_unit, positive

__all__ = ["AuditConfig"]

_in_unit = in_unit("audit")
_positive = positive("audit")


@attrs.frozen
class AuditConfig:
    """How the audit retrieves, verifies and decides.

    Retrieval and verification (cost grows as N * k):
        features: the local features, ``EXTRACTOR[+MATCHER]`` by registered name
            (``"sift"``: consist-spatial's RootSIFT, no torch; ``"aliked-n16+lightglue"``,
            ``"disk+lightglue"``, ``"xfeat+lightglue"`` with its ``learned`` extra);
            extracted once per image and read by the retriever and every checker.
        retriever: a registered retriever, or ``"auto"``: ``asmk`` (instance retrieval
            over the local features) when registered, else ``vector``.
        device: where learned features run (``"cpu"``, ``"cuda"``, ``"auto"``).
        k: neighbours retrieved and verified per sample (10: the spatial checker's
            default; revisitop's re-ranking baselines verify 100, but on a labelled
            collection the same object's views rank high and 10 keeps N * k cheap).
        max_side, max_keypoints: feature extraction (1024 px, 2048 RootSIFT
            keypoints: the spatial plugin's defaults, revisitop's resolution).
        min_inliers: distinct inliers for a verified pair (15, the spatial checker's
            default and the threshold of An et al.'s community selection).
        weak_inliers: pairs with at least this many inliers but fewer than
            ``min_inliers`` join the graph as weak edges (8: on landmark-multiview and
            ukbench every such pair showed the same object; random pairs give 0-5
            after DEGENSAC), so that propagation reaches images no single pair verifies.
        weak_strength: strength of a weak edge just below ``min_inliers`` (0.4),
            falling linearly to a fifth of it at ``weak_inliers``.
        chunk_size: samples per task sent to a worker (16: large enough to amortise
            the task overhead, small enough that an interrupted run loses little).

    Leave-one-out decision:
        given_prior: probability the recognizer (here: the dataset) is right before
            any evidence (0.6: label noise is a minority, but one well-verified
            neighbour of another label must be able to overturn it).
        other_prior: prior of a label a neighbour carries (0.1).
        hops: propagation depth through verified pairs (3, as hypergraph
            propagation, An et al. NeurIPS 2021).
        hop_decay: strength kept per extra hop (0.7).
        edge_floor: strength of a pair that just reaches ``min_inliers`` (0.5);
            ``edge_scale``: inliers above it that close 63% of the gap to 1 (20, the
            spatial checker's ``support_scale``).
        self_trust: weight of a neighbour's own given label against what its
            neighbourhood says when its label is used as evidence (1.0), scaled by
            the share of that label's connected images in the neighbour's community
            (a label copied onto an image of another community is a poor witness).
        iterations: rounds of label refinement of the propagation (2).
        graph_confidence_scale: propagated mass at which the graph vote's confidence
            reaches 63% (1.0: one strong verified neighbour).
        incoherence_weight: log-odds the given label's prior loses when none of
            the other connected images of that label share the sample's community
            (1.0; proportionally less when some do; a label whose images fall into
            many unconnected communities is itself suspect).
        flag_confidence: flag when another label wins and the given label's
            posterior is at most ``1 - flag_confidence`` (0.8: the evidence must
            clearly contradict the given label; the suggestion may still be unsure).
        near_duplicate_coverage, near_duplicate_ratio: a verified pair whose inlier
            hull covers this much of the query (0.8) with this inlier ratio (0.7) is a
            near-duplicate; with different labels it is reported as such.
    """

    features: str = attrs.field(default="sift", converter=str)
    retriever: str = attrs.field(default="auto", converter=str)
    device: str = attrs.field(default="cpu", converter=str)
    k: int = attrs.field(default=10, converter=int)
    max_side: int | None = 1024
    max_keypoints: int = attrs.field(default=2048, converter=int)
    min_inliers: int = attrs.field(default=15, converter=int)
    weak_inliers: int = attrs.field(default=8, converter=int)
    weak_strength: float = attrs.field(default=0.4, converter=float, validator=_in_unit)
    chunk_size: int = attrs.field(default=16, converter=int)
    given_prior: float = attrs.field(default=0.6, converter=float, validator=_in_unit)
    other_prior: float = attrs.field(default=0.1, converter=float, validator=_in_unit)
    hops: int = attrs.field(default=3, converter=int)
    hop_decay: float = attrs.field(default=0.7, converter=float, validator=_in_unit)
    edge_floor: float = attrs.field(default=0.5, converter=float, validator=_in_unit)
    edge_scale: float = attrs.field(default=20.0, converter=float, validator=_positive)
    self_trust: float = attrs.field(default=1.0, converter=float)
    iterations: int = attrs.field(default=2, converter=int)
    graph_confidence_scale: float = attrs.field(default=1.0, converter=float, validator=_positive)
    incoherence_weight: float = attrs.field(default=1.0, converter=float)
    flag_confidence: float = attrs.field(default=0.8, converter=float, validator=_in_unit)
    near_duplicate_coverage: float = attrs.field(default=0.8, converter=float, validator=_in_unit)
    near_duplicate_ratio: float = attrs.field(default=0.7, converter=float, validator=_in_unit)

    @k.validator
    def _check_k(self, _attr: Any, value: int) -> None:
        if value < 1:
            raise ValueError(f"audit option k must be >= 1, got {value}")

    @chunk_size.validator
    def _check_chunk(self, _attr: Any, value: int) -> None:
        if value < 1:
            raise ValueError(f"audit option chunk_size must be >= 1, got {value}")

    def with_options(self, **options: Any) -> AuditConfig:
        """This config with some fields changed; unknown names are an error."""
        known = {a.name for a in attrs.fields(AuditConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown audit option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return attrs.evolve(self, **options)
