"""The connector: several recognizers from different domains behind one.

The thesis' frontal module also decides *which* domain-specific model to trust for
an image (a landmark model for a façade, an object model for a mug). A
:class:`Connector` holds named :class:`Domain` recognizers and, per image, runs them
and chooses whose candidates to pass on, recording why:

1. **neighbours** (when a store and an embedder are given): the domain whose
   labels hold the largest share of the retrieved neighbours' similarity mass,
   if that share reaches ``min_share`` (0.5): the database says what kind of
   thing this is;
2. otherwise **confidence**: the domain whose recognizer is most confident in its
   top candidate.

A connector is a recognizer (``connector(image) -> [(label, score), ...]``), so
``consist.wrap(connector, store)`` makes the whole thing self-correcting; each
candidate's source is ``connector:<domain>`` and :meth:`Connector.choose` returns
the full :class:`Choice` with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from consist.errors import ConsistError
from consist.images import load_image
from consist.recognizer import to_candidates
from consist.records import Candidate

if TYPE_CHECKING:
    from consist import Store

__all__ = ["MIN_SHARE", "Choice", "Connector", "Domain"]

log = structlog.get_logger("consist.semantic.connector")

#: Share of the neighbours' similarity mass a domain needs to be chosen by them.
MIN_SHARE = 0.5


@attrs.frozen
class Domain:
    """A recognizer and the labels it knows (``labels=None``: the labels it returns)."""

    name: str
    recognizer: Callable[[Any], Any]
    labels: frozenset[str] | None = attrs.field(default=None, converter=lambda v: None if v is None else frozenset(v))
    scores: str = "probability"


@attrs.frozen
class Choice:
    domain: str
    reason: str
    candidates: tuple[Candidate, ...]
    tops: dict[str, float]
    shares: dict[str, float]


class Connector:
    """Chooses, per image, the domain recognizer to trust (see the module docs)."""

    def __init__(self, domains: Iterable[Domain], *, store: Store | None = None, embedder: Any = None, k: int = 10, min_share: float = MIN_SHARE, name: str = "connector") -> None:
        self.domains = {d.name: d for d in domains}
        if not self.domains:
            raise ConsistError("a connector needs at least one domain")
        self.store = store
        self.embedder = embedder
        if isinstance(embedder, str):
            from consist import plugins

            self.embedder = plugins.embedders()[embedder]
        self.k = k
        self.min_share = min_share
        self.name = name

    def _shares(self, pixels: Any, outputs: Mapping[str, tuple[Candidate, ...]]) -> dict[str, float]:
        if self.store is None or self.embedder is None:
            return {}
        hits = self.store.search(self.embedder.embed(pixels), self.k)
        mass: dict[str, float] = defaultdict(float)
        total = 0.0
        for sample, sim in hits:
            if sample.label is None:
                continue
            total += max(sim, 0.0)
            for name, d in self.domains.items():
                known = d.labels if d.labels is not None else {c.label for c in outputs[name]}
                if sample.label in known:
                    mass[name] += max(sim, 0.0)
        return {n: mass[n] / total for n in self.domains} if total > 0 else {}

    def choose(self, image: Any) -> Choice:
        pixels = load_image(image)
        outputs: dict[str, tuple[Candidate, ...]] = {}
        for name, d in self.domains.items():
            cands, _ = to_candidates(d.recognizer(pixels), source=f"{self.name}:{name}", scores=d.scores)
            outputs[name] = tuple(cands)
        tops = {n: (c[0].score if c else 0.0) for n, c in outputs.items()}
        shares = self._shares(pixels, outputs)
        if shares:
            best = max(shares, key=lambda n: shares[n])
            if shares[best] >= self.min_share and outputs[best]:
                reason = f"neighbours: {shares[best]:.0%} of the neighbours' similarity is on {best} labels"
                return self._done(Choice(best, reason, outputs[best], tops, shares))
        best = max(tops, key=lambda n: tops[n])
        others = ", ".join(f"{n} {s:.2f}" for n, s in tops.items() if n != best)
        reason = f"confidence: {best} is the most confident ({tops[best]:.2f}" + (f" vs {others})" if others else ")")
        return self._done(Choice(best, reason, outputs[best], tops, shares))

    def _done(self, choice: Choice) -> Choice:
        log.info("connector_choice", domain=choice.domain, reason=choice.reason)
        return choice

    def __call__(self, image: Any) -> list[tuple[str, float]]:
        choice = self.choose(image)
        return [(c.label, c.score) for c in choice.candidates]
