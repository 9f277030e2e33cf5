"""The default aggregation rule on hand-computed cases, and calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consist import Candidate, Prediction, Query, Vote
from consist.aggregate import AggregationConfig, aggregate, calibrate, logit


def pred(*cands):
    return Prediction(Query("q"), [Candidate(lab, s) for lab, s in cands])


def test_prior_only_single_candidate_has_posterior_of_its_score():
    r = aggregate(pred(("cat", 0.8)), [])
    # s = logit(0.8); conf = e^s / (1 + e^s) = 0.8
    assert r.label == "cat" and r.confidence == pytest.approx(0.8)


def test_hand_computed_two_labels():
    votes = [Vote("geo", "dog", 0.9, 1.0), Vote("sem", "cat", 0.4, 0.5)]
    r = aggregate(pred(("cat", 0.6), ("dog", 0.3)), votes)
    s_cat = math.log(0.6 / 0.4) + 0.5 * math.log(0.4 / 0.6)
    s_dog = math.log(0.3 / 0.7) + math.log(0.9 / 0.1)
    assert r.scores == pytest.approx({"cat": s_cat, "dog": s_dog})
    assert r.label == "dog"
    assert r.confidence == pytest.approx(math.exp(s_dog) / (1 + math.exp(s_cat) + math.exp(s_dog)))
    assert r.margin == pytest.approx(s_dog - s_cat)


def test_unlisted_label_starts_from_unlisted_logit_and_weights_apply():
    cfg = AggregationConfig(unlisted_logit=-1.0, checker_weights={"geo": 2.0})
    r = aggregate(pred(("cat", 0.5)), [Vote("geo", "fox", 0.8, 0.5)], cfg)
    assert r.scores["fox"] == pytest.approx(-1.0 + 2.0 * 0.5 * math.log(4))


def test_repeated_votes_of_one_checker_decay():
    one = aggregate(pred(("cat", 0.5)), [Vote("geo", "cat", 0.9)]).scores["cat"]
    three = aggregate(pred(("cat", 0.5)), [Vote("geo", "cat", 0.9)] * 3).scores["cat"]
    assert three == pytest.approx(one * (1 + 0.5 + 0.25))
    # but two different checkers add up fully
    two = aggregate(pred(("cat", 0.5)), [Vote("geo", "cat", 0.9), Vote("sem", "cat", 0.9)]).scores["cat"]
    assert two == pytest.approx(2 * one)


def test_extreme_support_is_clipped():
    r = aggregate(pred(("cat", 0.5)), [Vote("a", "cat", 1.0)])
    assert r.scores["cat"] == pytest.approx(logit(1 - 1e-3))
    assert math.isfinite(r.confidence) and r.confidence < 1


def _synthetic(n: int, seed: int):
    """A reliable checker ("good") and a coin-flipping one ("noise")."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        truth = "cat" if rng.random() < 0.5 else "dog"
        other = "dog" if truth == "cat" else "cat"
        p = Prediction(Query(f"q{i}"), [Candidate("cat", 0.5), Candidate("dog", 0.5)])
        good = Vote("good", truth if rng.random() < 0.9 else other, 0.9)
        noise = Vote("noise", truth if rng.random() < 0.5 else other, 0.9)
        out.append((p, [good, noise], truth))
    return out


def _nll(examples, cfg):
    total = 0.0
    for p, votes, truth in examples:
        r = aggregate(p, votes, cfg)
        m = max(max(r.scores.values()), 0.0)
        z = math.exp(-m) + sum(math.exp(s - m) for s in r.scores.values())
        total -= r.scores[truth] - m - math.log(z)
    return total / len(examples)


def test_calibration_learns_which_checker_to_trust_and_improves_likelihood():
    train, test = _synthetic(400, 0), _synthetic(400, 1)
    cfg = calibrate(train)
    assert cfg.checker_weights["good"] > 3 * abs(cfg.checker_weights["noise"])
    assert _nll(test, cfg) < _nll(test, AggregationConfig())
