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
            default and the threshold of An et al.'s community selection): what the
            report calls "verified"; the decision links pairs from ``weak_inliers``.
        chunk_size: samples per task sent to a worker (16: large enough to amortise
            the task overhead, small enough that an interrupted run loses little).

    Decision (the label model, :mod:`consist.audit.labelmodel`):
        weak_inliers: inliers that link two images as views of one object (8: no
            pair of different objects reached 8 RANSAC inliers among 5,490+ top-30
            pairs of revisitop-paris-dev, landmark-multiview and ukbench-subset, while
            true pairs often stop between 8 and 15); the groups of linked images share
            one true label.
        generic_min_connected, generic_max_agreement: a label with at least 5 linked
            images of which at most 20% link to an image of the same label names no
            object (a city, "misc"): never a class, never a suggestion.
        generic_labels: labels the user declares generic (``--generic-label``).
        detect_generic: detect generic labels from the graph (True).
        flag_probability: flag when P(given label wrong) exceeds it (0.5: more likely
            wrong than right; P(wrong) is calibrated, see the benchmark's ECE).
        min_confidence, min_witnesses: ``--apply`` relabels only flags whose P(wrong)
            and suggestion posterior both reach ``min_confidence`` (0.9) and whose
            suggestion at least ``min_witnesses`` (2) other verified views carry. On
            revisitop-paris-dev (natural, 10%, 20%) that applied 29 changes, all right;
            with one witness allowed, 2 of 8 natural changes were wrong, each resting
            on a single partner whose own label was wrong (benchmarks/README.md).
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
    chunk_size: int = attrs.field(default=16, converter=int)
    generic_min_connected: int = attrs.field(default=5, converter=int)
    generic_max_agreement: float = attrs.field(default=0.2, converter=float, validator=_in_unit)
    generic_labels: tuple[str, ...] = attrs.field(default=(), converter=lambda v: tuple(sorted(set(v or ()))))
    detect_generic: bool = attrs.field(default=True, converter=bool)
    flag_probability: float = attrs.field(default=0.5, converter=float, validator=_in_unit)
    min_confidence: float = attrs.field(default=0.9, converter=float, validator=_in_unit)
    min_witnesses: int = attrs.field(default=2, converter=int)
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
