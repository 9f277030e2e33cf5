"""Leave-one-out predictions: the dataset's label is the prediction to verify.

A sample's candidates are its given label (prior ``given_prior``) and the labels its
retrieved neighbours carry (prior ``other_prior`` each): the checkers can only
support a label someone proposed, and a label error is, almost always, a label that
another view of the same object carries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from consist.records import Candidate, Neighbour, Prediction, Query

__all__ = ["build_prediction", "prior_with_penalty"]


def prior_with_penalty(p: float, penalty: float) -> float:
    """``p`` lowered by ``penalty`` log-odds (the label-coherence penalty)."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    z = math.log(p / (1 - p)) - penalty
    return 1.0 / (1.0 + math.exp(-z))


def build_prediction(query: Query, given_label: str, neighbours: Sequence[Neighbour], *, given_prior: float, other_prior: float) -> Prediction:
    """The prediction "``query`` shows ``given_label``", with the neighbours' labels
    as the alternatives (in retrieval order, each once)."""
    candidates = [Candidate(given_label, given_prior, source="dataset")]
    seen = {given_label}
    for n in sorted(neighbours, key=lambda n: n.rank):
        label = n.sample.label
        if label is None or label in seen:
            continue
        seen.add(label)
        candidates.append(Candidate(label, other_prior, source="neighbours"))
    return Prediction(query=query, candidates=tuple(candidates), recognizer="dataset")
