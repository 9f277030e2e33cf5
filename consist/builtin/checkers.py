"""The built-in checker: a similarity-weighted vote of the retrieved neighbours.

It is the cheapest evidence there is (no pixels are read) and the weakest: global
similarity says "looks alike", not "is the same object". It therefore votes with a
modest default confidence, and the geometric, topological and semantic checkers of
the plugins overrule it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from consist.contracts.checker import Abstain, BaseChecker, CheckContext
from consist.contracts.hookspecs import hookimpl
from consist.records import Neighbour, Prediction, Vote


class NeighbourVoteChecker(BaseChecker):
    """Votes for each label among the neighbours with support = smoothed share of
    the neighbours' similarity mass carrying that label.

    Options (``checker_options["knn"]``): ``alpha`` (additive smoothing, 1.0),
    ``confidence`` (weight of its votes, 0.5), ``min_similarity`` (neighbours below it
    are ignored, 0.0), ``k`` (use at most the k nearest, all by default).
    """

    name = "knn"
    #: it reads labels and similarities only: its agreement never makes an image "verified"
    reads_pixels = False
    cost = 1e-5
    timeout = None  # pure arithmetic on records: run inline
    description = "similarity-weighted label vote of the retrieved neighbours"

    def check(self, prediction: Prediction, neighbours: Sequence[Neighbour], context: CheckContext) -> Sequence[Vote]:
        opts = context.config
        alpha = float(opts.get("alpha", 1.0))
        confidence = float(opts.get("confidence", 0.5))
        min_sim = float(opts.get("min_similarity", 0.0))
        k = opts.get("k")
        usable = [n for n in neighbours if n.sample.label is not None and n.similarity > min_sim]
        usable.sort(key=lambda n: n.rank)
        if k is not None:
            usable = usable[: int(k)]
        if not usable:
            raise Abstain("no labelled neighbour above min_similarity")
        mass: dict[str, float] = defaultdict(float)
        count: dict[str, int] = defaultdict(int)
        for n in usable:
            mass[n.sample.label] += n.similarity  # type: ignore[index]
            count[n.sample.label] += 1  # type: ignore[index]
        total = sum(mass.values())
        labels = list(dict.fromkeys([*mass, *(c.label for c in prediction.candidates)]))
        votes = []
        for label in labels:
            support = (mass.get(label, 0.0) + alpha * 0.5) / (total + alpha)
            votes.append(self.vote(label, support, confidence, neighbours=count.get(label, 0), similarity_mass=round(mass.get(label, 0.0), 6)))
        return votes


@hookimpl
def consist_register_checkers(register: Callable[[object], None]) -> None:
    register(NeighbourVoteChecker())
