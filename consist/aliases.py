"""Personal names of labels, resolved wherever labels are compared.

A person may call the blue mug "Bluey" or the Radcliffe Camera "the Rad Cam"
(``consist tell``). The store keeps such aliases (``store.set_alias``); this
module turns any name into the canonical label: the engine canonicalises a
prediction's candidates before the checkers compare them with the neighbours'
labels, and conversational feedback resolves the names people use.

Names are compared after :func:`normalise` (case-folded; ``_``, ``-`` and runs of
spaces read as one space), so "Radcliffe Camera", "radcliffe_camera" and
"RADCLIFFE-CAMERA" are one name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

from consist.records import Candidate, Prediction

if TYPE_CHECKING:
    from consist.contracts.store import Store

__all__ = ["Resolution", "alias_map", "canonicalise", "canonicalise_prediction", "normalise", "resolve_label"]

_LEADING_ARTICLE = re.compile(r"^(the|a|an)\s+", re.I)


def normalise(name: str) -> str:
    """The comparison form of a name: ``"The_Radcliffe-Camera "`` -> ``"the radcliffe camera"``."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", name)).strip().casefold()


def alias_map(store: Store | Mapping[str, str] | None) -> dict[str, str]:
    """Normalised alias -> label from a store (empty for stores without aliases or
    ``None``); a mapping passes through, normalised."""
    if store is None:
        return {}
    if isinstance(store, Mapping):
        return {normalise(k): v for k, v in store.items()}
    get = getattr(store, "aliases", None)
    if get is None:
        return {}
    return {normalise(k): v for k, v in get().items()}


def canonicalise(label: str, store: Store | Mapping[str, str] | None) -> str:
    """The canonical label for ``label`` (itself when it is no alias)."""
    return alias_map(store).get(normalise(label), label)


def canonicalise_prediction(prediction: Prediction, store: Store | Mapping[str, str] | None) -> Prediction:
    """``prediction`` with aliased candidate labels replaced by their canonical
    labels (the same object when nothing changes). Two candidates that become one
    label keep the higher score, at the better rank."""
    aliases = alias_map(store)
    if not aliases:
        return prediction
    out: dict[str, Candidate] = {}
    changed = False
    for c in prediction.candidates:
        label = aliases.get(normalise(c.label), c.label)
        if label != c.label:
            changed = True
            c = attrs.evolve(c, label=label)
        if label in out:
            changed = True
            if c.score > out[label].score:
                out[label] = attrs.evolve(out[label], score=c.score)
            continue
        out[label] = c
    return attrs.evolve(prediction, candidates=tuple(out.values())) if changed else prediction


@attrs.frozen
class Resolution:
    """What a name resolved to: ``label`` and ``how`` (``label``: an existing label
    exactly; ``alias``; ``normalised``: an existing label up to case, spaces and a
    leading article; ``partial``: the only label containing all the name's words;
    ``new``: no match, the name becomes a new label)."""

    label: str
    how: str


def resolve_label(name: str, store: Store | None = None, labels: Iterable[str] | None = None) -> Resolution:
    """Resolve a name a person used to a label of the store."""
    text = re.sub(r"\s+", " ", name).strip().strip(".,;:!?\"'")
    known = list(labels) if labels is not None else (list(store.labels()) if store is not None and hasattr(store, "labels") else [])
    if text in known:
        return Resolution(text, "label")
    aliases = alias_map(store)
    by_norm = {normalise(lab): lab for lab in known}
    for candidate in (text, _LEADING_ARTICLE.sub("", text)):
        key = normalise(candidate)
        if key in aliases:
            return Resolution(aliases[key], "alias")
        if key in by_norm:
            return Resolution(by_norm[key], "normalised")
    words = set(normalise(_LEADING_ARTICLE.sub("", text)).split())
    if words:
        partial = [lab for norm, lab in by_norm.items() if words <= set(norm.split())]
        if len(partial) == 1:  # "the Bodleian" -> "bodleian_library", when only one label fits
            return Resolution(partial[0], "partial")
    return Resolution(_LEADING_ARTICLE.sub("", text), "new")
