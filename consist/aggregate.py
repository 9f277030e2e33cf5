"""Turning votes into a decision: weighted log-odds with a "none of these" option.

The rule (documented in docs/architecture.md, overridable through the
``consist_aggregate`` hook):

* every candidate label starts from the recognizer's belief,
  ``prior_weight * logit(score)``; a label that only the checkers mention starts
  from ``unlisted_logit`` (the recognizer did not consider it);
* each vote adds ``weight[checker] * confidence * logit(support)``: a support of 0.5
  adds nothing, 0.9 adds +2.2, 0.1 adds -2.2 (supports are clipped to
  ``[eps, 1 - eps]`` so that one vote cannot be infinitely sure);
* when a checker votes several times for the same label (one vote per verified
  neighbour, say), its votes are sorted by strength and the k-th counts
  ``repeat_decay ** k``: correlated evidence should not add up linearly;
* the posterior of label ``l`` is ``exp(s_l) / (1 + sum_j exp(s_j))``: a softmax
  with an implicit "none of these" class of score 0, so that a lone candidate
  with no evidence has confidence 0.5, not 1.

This is a multinomial logistic model whose parameters (``prior_weight``, one weight
per checker, ``unlisted_logit``) can be fitted on labelled decisions with
:func:`calibrate`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from consist.records import Prediction, Vote

__all__ = ["AggregateResult", "AggregationConfig", "aggregate", "calibrate", "logit"]


def logit(p: float, eps: float = 1e-3) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


@attrs.frozen
class AggregationConfig:
    """Parameters of the default aggregation rule.

    Attributes:
        prior_weight: how much the recognizer's own scores count (0 ignores them).
        checker_weights: per-checker multipliers (default 1.0 for unlisted checkers).
        unlisted_logit: starting log-odds of a label the recognizer did not list.
        repeat_decay: weight ratio between a checker's successive votes for one label.
        eps: supports and scores are clipped to ``[eps, 1 - eps]``.
    """

    prior_weight: float = 1.0
    checker_weights: Mapping[str, float] = attrs.field(factory=dict)
    unlisted_logit: float = -2.0
    repeat_decay: float = 0.5
    eps: float = 1e-3

    def weight(self, checker: str) -> float:
        return float(self.checker_weights.get(checker, 1.0))


@attrs.frozen
class AggregateResult:
    """Posterior log-odds per label and the winning label with its probability."""

    scores: dict[str, float]
    label: str
    confidence: float

    @property
    def margin(self) -> float:
        """Log-odds gap between the best and the second-best label (inf if alone)."""
        ordered = sorted(self.scores.values(), reverse=True)
        return ordered[0] - ordered[1] if len(ordered) > 1 else math.inf


def _vote_terms(votes: Sequence[Vote], config: AggregationConfig) -> dict[str, dict[str, list[float]]]:
    """label -> checker -> list of signed contributions (before decay)."""
    terms: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for v in votes:
        terms[v.label][v.checker].append(v.confidence * logit(v.support, config.eps))
    return terms


def _decayed(contribs: list[float], decay: float) -> float:
    if len(contribs) == 1:
        return contribs[0]
    ordered = sorted(contribs, key=abs, reverse=True)
    return sum(c * decay**k for k, c in enumerate(ordered))


def aggregate(prediction: Prediction, votes: Sequence[Vote], config: AggregationConfig | None = None) -> AggregateResult:
    """Apply the default rule (see the module docstring)."""
    config = config or AggregationConfig()
    scores: dict[str, float] = {}
    for c in prediction.candidates:
        if c.label not in scores:  # first (best) mention wins
            scores[c.label] = config.prior_weight * logit(c.score, config.eps)
    for label, by_checker in _vote_terms(votes, config).items():
        s = scores.get(label, config.unlisted_logit)
        for checker, contribs in by_checker.items():
            s += config.weight(checker) * _decayed(contribs, config.repeat_decay)
        scores[label] = s
    # ties go to the recognizer's order, then to the order labels were first mentioned
    label = max(scores, key=lambda k: scores[k])
    top = scores[label]
    # stable softmax with the implicit null class (score 0)
    m = max(top, 0.0)
    denom = math.exp(-m) + sum(math.exp(s - m) for s in scores.values())
    confidence = math.exp(top - m) / denom
    return AggregateResult(scores=scores, label=label, confidence=confidence)


def calibrate(
    examples: Sequence[tuple[Prediction, Sequence[Vote], str | None]],
    *,
    base: AggregationConfig | None = None,
    l2: float = 1e-2,
    iterations: int = 500,
    learning_rate: float = 0.1,
) -> AggregationConfig:
    """Fit ``prior_weight``, the per-checker weights and ``unlisted_logit`` by maximum
    likelihood on labelled examples ``(prediction, votes, true_label)``.

    ``true_label=None`` (or a label nobody mentioned) is the "none of these" class.
    Gradient ascent on the multinomial log-likelihood with an L2 pull towards the
    default weights of 1; deterministic. Returns a new config to pass to the engine.
    """
    base = base or AggregationConfig()
    checkers = sorted({v.checker for _, votes, _ in examples for v in votes})
    n_params = 2 + len(checkers)  # prior_weight, unlisted_logit, checkers...
    # Each example becomes a feature matrix: rows = labels, cols = parameters.
    feats: list[np.ndarray] = []
    targets: list[int] = []
    for prediction, votes, truth in examples:
        labels: list[str] = []
        for c in prediction.candidates:
            if c.label not in labels:
                labels.append(c.label)
        for v in votes:
            if v.label not in labels:
                labels.append(v.label)
        x = np.zeros((len(labels), n_params))
        for i, lab in enumerate(labels):
            score = prediction.score_of(lab)
            if score is None:
                x[i, 1] = 1.0
            else:
                x[i, 0] = logit(score, base.eps)
        for lab, by_checker in _vote_terms(votes, base).items():
            i = labels.index(lab)
            for ck, contribs in by_checker.items():
                x[i, 2 + checkers.index(ck)] += _decayed(contribs, base.repeat_decay)
        feats.append(x)
        targets.append(labels.index(truth) if truth in labels else -1)

    theta = np.array([base.prior_weight, base.unlisted_logit] + [base.weight(c) for c in checkers], dtype=float)
    anchor = theta.copy()
    n = max(len(examples), 1)
    for _ in range(iterations):
        grad = np.zeros_like(theta)
        for x, t in zip(feats, targets):
            s = x @ theta
            m = max(s.max(initial=0.0), 0.0)
            e = np.exp(s - m)
            z = np.exp(-m) + e.sum()
            p = e / z
            expected = p @ x
            observed = x[t] if t >= 0 else np.zeros(n_params)
            grad += observed - expected
        grad = grad / n - l2 * (theta - anchor)
        theta += learning_rate * grad
    return attrs.evolve(
        base,
        prior_weight=float(theta[0]),
        unlisted_logit=float(theta[1]),
        checker_weights={**dict(base.checker_weights), **{c: float(w) for c, w in zip(checkers, theta[2:])}},
    )
