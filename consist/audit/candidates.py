"""Leave-one-out predictions: the dataset's label is the prediction to verify.

A sample's candidates are its given label (prior ``given_prior``) and the labels its
retrieved neighbours carry (prior ``other_prior`` each): the checkers can only
support a label someone proposed, and a label error is, almost always, a label that
another view of the same object carries.
"""

from __future__ import annotations

from collections.abc import Sequence

from consist.records import Candidate, Neighbour, Prediction, Query

__all__ = ["GIVEN_PRIOR", "OTHER_PRIOR", "build_prediction"]

#: Prior of the given label in the engine's per-image decision recorded in audit.jsonl
#: (0.6: label noise is a minority). The verdict itself comes from the label model.
GIVEN_PRIOR = 0.6
#: Prior of each label a neighbour carries (0.1).
OTHER_PRIOR = 0.1


def build_prediction(query: Query, given_label: str, neighbours: Sequence[Neighbour], *, given_prior: float = GIVEN_PRIOR, other_prior: float = OTHER_PRIOR) -> Prediction:
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
