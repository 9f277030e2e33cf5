"""Conversational feedback: a sentence about an image becomes store actions.

"this is my mug", "that's the Radcliffe Camera, not the Bodleian", "call the blue
one Bluey", "note: taken from the roof", "its colour is blue" become
:class:`Relabel`, :class:`Alias`, :class:`Note` and :class:`Attribute` actions. A
:class:`Plan` is shown before anything is applied (:func:`apply_plan`), carries
``user`` provenance, and every action is a history entry that ``consist undo``
reverts.

With an LMM, free text is understood by the model, which must answer with JSON
actions that are then validated like any input; without one (or when its answer
does not validate), the documented grammar of :data:`GRAMMAR` covers the common
forms. Names are resolved to the store's labels (``consist.aliases.resolve_label``:
exact label, alias, same words up to case/underscores/an article, else a new label).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from consist.adapt import correct
from consist.aliases import resolve_label
from consist.errors import ConsistError
from consist.records import HistoryEntry, Provenance, Sample
from consist_semantic.chat import LMMError

if TYPE_CHECKING:
    from consist import Store

__all__ = ["GRAMMAR", "Alias", "Attribute", "FeedbackError", "Note", "Plan", "Relabel", "apply_plan", "parse_rules", "parse_with_lmm", "understand"]


class FeedbackError(ConsistError):
    """A sentence could not be turned into actions (the message says why)."""


@attrs.frozen
class Relabel:
    """The target shows ``label`` (the person said it is not ``was``, if given)."""

    sample_id: str
    label: str
    was: str | None = None
    how: str = "label"

    def describe(self) -> str:
        new = " (a new label)" if self.how == "new" else ""
        return f"relabel {self.sample_id} as {self.label!r}{new}" + (f", not {self.was!r}" if self.was else "") + " [user]"

    def apply(self, store: Store, reason: str, uri: str | None = None) -> list[HistoryEntry]:
        return correct(store, self.sample_id, self.label, uri=uri, reason=reason)


@attrs.frozen
class Alias:
    """``name`` is the person's name for ``label``."""

    name: str
    label: str

    def describe(self) -> str:
        return f"alias {self.name!r} -> {self.label!r} [user]"

    def apply(self, store: Store, reason: str, uri: str | None = None) -> list[HistoryEntry]:
        if not hasattr(store, "set_alias"):
            raise FeedbackError(f"{store.uri}: this store cannot keep aliases")
        e = store.set_alias(self.name, self.label, provenance=Provenance.USER, reason=reason)
        return [] if e is None else [e]


@attrs.frozen
class Note:
    sample_id: str
    text: str

    def describe(self) -> str:
        return f"note on {self.sample_id}: {self.text!r} [user]"

    def apply(self, store: Store, reason: str, uri: str | None = None) -> list[HistoryEntry]:
        if not hasattr(store, "annotate"):
            raise FeedbackError(f"{store.uri}: this store cannot keep notes")
        e = store.annotate(self.sample_id, note=self.text, provenance=Provenance.USER, reason=reason)
        return [] if e is None else [e]


@attrs.frozen
class Attribute:
    sample_id: str
    key: str
    value: str

    def describe(self) -> str:
        return f"attribute of {self.sample_id}: {self.key} = {self.value!r} [user]"

    def apply(self, store: Store, reason: str, uri: str | None = None) -> list[HistoryEntry]:
        if not hasattr(store, "annotate"):
            raise FeedbackError(f"{store.uri}: this store cannot keep attributes")
        e = store.annotate(self.sample_id, attributes={self.key: self.value}, provenance=Provenance.USER, reason=reason)
        return [] if e is None else [e]


Action = Relabel | Alias | Note | Attribute


@attrs.frozen
class Plan:
    """What a sentence means for the store, before anything is applied."""

    sentence: str
    target: str | None
    actions: tuple[Action, ...]
    parser: str  # "grammar" or "lmm"
    warnings: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        return [a.describe() for a in self.actions]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sentence": self.sentence,
            "target": self.target,
            "parser": self.parser,
            "warnings": list(self.warnings),
            "actions": [{"type": type(a).__name__.lower(), **attrs.asdict(a), "description": a.describe()} for a in self.actions],
        }


# ------------------------------------------------------------------- grammar

_REF = r"(?:this|that|it|here|this one|that one|the \w+(?: \w+)? one|this (?:picture|photo|image)|the (?:picture|photo|image))"
_IS = r"(?:\s+is|'s|’s|s)"
_Q = "\"'“”‘’"

#: The grammar understood without an LMM (case-insensitive; one clause per
#: sentence or per ";"). REF is "this", "that", "it", "this one", "the blue one",
#: "this picture"...; names may be quoted.
GRAMMAR = (
    ("note", r"^(?:note|remember)(?:\s*:\s*|\s+that\s+)(?P<text>.+)$", "note: TEXT / remember that TEXT -> a note on the image"),
    ("alias_call", rf"^call\s+(?P<ref>{_REF})\s+(?P<name>.+)$", "call REF NAME -> NAME is an alias of the image's label"),
    ("alias_call", rf"^call\s+(?P<ref>.+?)\s+(?P<name>[{_Q}].+[{_Q}]|\S+)$", "call LABEL NAME -> NAME is an alias of LABEL (quote a NAME of several words)"),
    ("alias_name_for", r"^(?P<name>.+?)\s+is\s+(?:my|our|the|a)?\s*(?:name|nickname)\s+for\s+(?P<label>.+)$", "NAME is my name for LABEL -> alias"),
    ("alias_known_as", r"^(?P<label>.+?)\s+(?:is|are)\s+also\s+(?:called|known\s+as)\s+(?P<name>.+)$", "LABEL is also called NAME -> alias"),
    ("alias_called", rf"^{_REF}{_IS}\s+(?:called|named)\s+(?P<name>.+)$", "REF is called NAME -> alias of the image's label"),
    ("not_but", rf"^(?:no,?\s*)?{_REF}{_IS}(?:\s+not|n't|n’t)\s+(?P<was>.+?),?\s+(?:but|it'?s|it is|this is|that'?s|rather)\s+(?P<label>.+)$", "REF is not WRONG, (but|it's) RIGHT -> relabel"),
    ("is_not", rf"^(?:no,?\s*)?{_REF}{_IS}\s+(?P<label>.+?),?\s+not\s+(?P<was>.+)$", "REF is RIGHT, not WRONG -> relabel"),
    ("only_not", rf"^(?:no,?\s*)?{_REF}{_IS}(?:\s+not|n't|n’t)\s+(?P<was>.+)$", "REF is not WRONG -> refused: say what it is instead"),
    ("attribute", r"^(?:its|the)\s+(?P<key>[\w ]+?)\s+is\s+(?P<value>.+)$", "its KEY is VALUE -> an attribute of the image"),
    ("is", rf"^(?:no,?\s*)?{_REF}{_IS}\s+(?P<label>.+)$", "REF is LABEL -> relabel (\"this is my mug\" keeps 'my': a personal label)"),
)
_COMPILED = [(kind, re.compile(rx, re.IGNORECASE)) for kind, rx, _ in GRAMMAR]


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(_Q).strip(" .!?,;:").strip(_Q).strip()


def _clauses(sentence: str) -> list[str]:
    parts = (re.sub(r"\s+", " ", p).strip().rstrip(" .!?,;:") for p in re.split(r";|(?<=[.!?])\s+", sentence))
    return [c for c in parts if c]


def _no_article(text: str) -> str:
    return re.sub(r"^(the|a|an)\s+", "", text, flags=re.IGNORECASE)


def _contradicts(was: str, label: str, store: Store | None) -> bool:
    """Whether the label the person rejected is not the sample's label ("the
    Bodleian" names "bodleian_library": no contradiction)."""
    from consist.aliases import normalise

    if resolve_label(was, store).label == label:
        return False
    return not set(normalise(_no_article(was)).split()) <= set(normalise(label).split())


def _need_target(target: Sample | None, clause: str) -> Sample:
    if target is None:
        raise FeedbackError(f"{clause!r} is about an image: say which one (a sample id or an image path)")
    return target


def parse_rules(sentence: str, store: Store | None, target: Sample | None = None) -> tuple[list[Action], list[str]]:
    """Actions by the grammar; raises :class:`FeedbackError` for a clause it does not
    understand (nothing is half-understood)."""
    actions: list[Action] = []
    warnings: list[str] = []
    for clause in _clauses(sentence):
        for kind, rx in _COMPILED:
            m = rx.match(clause)
            if m is None:
                continue
            g = {k: _clean(v) for k, v in m.groupdict().items() if v is not None}
            if kind == "only_not":  # a negation alone names no label: never relabel to "not a cat"
                raise FeedbackError(f"{clause!r} says what it is not, not what it is: say what it is (\"it's not {g['was']}, it's ...\")")
            if kind == "note":
                actions.append(Note(_need_target(target, clause).id, g["text"]))
            elif kind == "attribute":
                actions.append(Attribute(_need_target(target, clause).id, re.sub(r"\s+", "_", g["key"].lower()), g["value"]))
            elif kind in ("alias_call", "alias_called", "alias_name_for", "alias_known_as"):
                ref = g.get("ref")
                if "label" in g:
                    label = resolve_label(g["label"], store).label
                elif ref is None or re.fullmatch(_REF, ref, re.IGNORECASE):
                    t = _need_target(target, clause)
                    if t.label is None:
                        raise FeedbackError(f"{clause!r}: {t.id} has no label yet to give a name to")
                    label = t.label
                else:
                    label = resolve_label(ref, store).label
                actions.append(Alias(_no_article(g["name"]), label))
            else:  # relabels
                t = _need_target(target, clause)
                res = resolve_label(g["label"], store)
                was = _no_article(g["was"]) if g.get("was") else None
                if was is not None and t.label is not None and _contradicts(was, t.label, store):
                    warnings.append(f"{t.id} is labelled {t.label!r}, not {was!r} as the sentence says")
                actions.append(Relabel(t.id, res.label, was, res.how))
                target = attrs.evolve(t, label=res.label)  # later clauses see the new label
            break
        else:
            raise FeedbackError(f"cannot understand {clause!r} without an LMM; forms understood: " + "; ".join(h for _, _, h in GRAMMAR))
    return actions, warnings


# ----------------------------------------------------------------------- LMM

_LMM_PROMPT = """You turn a person's feedback about a photo into database actions.
Answer with one JSON object and nothing else: {{"actions": [...]}} where each action is one of
  {{"type": "relabel", "label": "<what the photo shows>", "was": "<the wrong label the person rejected, or null>"}}
  {{"type": "alias", "name": "<the person's own name>", "label": "<the label it stands for>"}}
  {{"type": "note", "text": "<a fact worth remembering about the photo>"}}
  {{"type": "attribute", "key": "<property>", "value": "<value>"}}
Prefer the existing labels when the person means one of them. Keep personal words ("my mug").
The photo is currently labelled: {current}.
Existing labels: {labels}.
Existing aliases: {aliases}.
Feedback: "{sentence}"
"""


def _json_object(text: str) -> Any:
    body = re.sub(r"^```(?:json)?|```$", "", text.strip(), flags=re.MULTILINE).strip()
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the answer")
    return json.loads(body[start : end + 1])


def _field(item: Mapping[str, Any], key: str) -> str:
    """``item[key]`` as clean text (``""`` when absent or empty)."""
    return _clean(str(item.get(key) or ""))


def parse_with_lmm(sentence: str, store: Store | None, target: Sample | None, backend: Any, *, image: Any = None, max_labels: int = 200) -> tuple[list[Action], list[str]]:
    """Actions by the LMM; raises ``ValueError`` when its answer does not validate."""
    from consist_semantic.chat import ChatRequest

    labels = sorted(store.labels()) if store is not None else []
    aliases = store.aliases() if store is not None and hasattr(store, "aliases") else {}
    prompt = _LMM_PROMPT.format(
        current=repr(target.label) if target is not None else "(no photo given)",
        labels=", ".join(labels[:max_labels]) + (" ..." if len(labels) > max_labels else "") or "(none)",
        aliases=", ".join(f"{k} = {v}" for k, v in aliases.items()) or "(none)",
        sentence=sentence.replace('"', "'"),
    )
    request = ChatRequest(prompt=prompt, images=(image,) if image is not None else (), max_tokens=400, temperature=0.0, top_logprobs=0, json_mode=True)
    data = _json_object(backend.chat(request).text)
    items = data.get("actions") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError("the answer has no 'actions' list")
    actions: list[Action] = []
    warnings: list[str] = []
    for it in items:
        if not isinstance(it, dict):
            raise ValueError(f"action {it!r} is not an object")
        kind = it.get("type")
        s = functools.partial(_field, it)
        if kind == "relabel" and s("label"):
            t = _need_target(target, sentence)
            res = resolve_label(s("label"), store)
            was = s("was") or None
            if was and t.label is not None and _contradicts(was, t.label, store):
                warnings.append(f"{t.id} is labelled {t.label!r}, not {was!r} as the sentence says")
            actions.append(Relabel(t.id, res.label, was, res.how))
            target = attrs.evolve(t, label=res.label)
        elif kind == "alias" and s("name") and (s("label") or (target is not None and target.label)):
            actions.append(Alias(s("name"), resolve_label(s("label"), store).label if s("label") else str(target.label)))  # type: ignore[union-attr]
        elif kind == "note" and s("text"):
            actions.append(Note(_need_target(target, sentence).id, s("text")))
        elif kind == "attribute" and s("key") and s("value"):
            actions.append(Attribute(_need_target(target, sentence).id, re.sub(r"\s+", "_", s("key").lower()), s("value")))
        else:
            raise ValueError(f"invalid action {it!r}")
    return actions, warnings


def understand(sentence: str, store: Store | None, target: Sample | None = None, *, backend: Any = None, image: Any = None) -> Plan:
    """The plan for ``sentence`` about ``target`` (a stored sample, or ``None``)."""
    if not sentence.strip():
        raise FeedbackError("nothing was said")
    if backend is not None:
        try:
            actions, warnings = parse_with_lmm(sentence, store, target, backend, image=image)
            return Plan(sentence, None if target is None else target.id, tuple(actions), "lmm", tuple(warnings))
        except (ValueError, KeyError, TypeError) as exc:
            actions, warnings = parse_rules(sentence, store, target)
            warnings.insert(0, f"the LMM's answer did not validate ({exc}); used the grammar")
            return Plan(sentence, None if target is None else target.id, tuple(actions), "grammar", tuple(warnings))
        except LMMError as exc:  # unreachable, failing, timed out: the grammar still understands
            try:
                actions, warnings = parse_rules(sentence, store, target)
            except FeedbackError as grammar:
                raise FeedbackError(f"{grammar} (the LMM could not be asked: {exc})") from None
            warnings.insert(0, f"the LMM failed ({exc}); used the grammar (--no-lmm skips the LMM)")
            return Plan(sentence, None if target is None else target.id, tuple(actions), "grammar", tuple(warnings))
    actions, warnings = parse_rules(sentence, store, target)
    return Plan(sentence, None if target is None else target.id, tuple(actions), "grammar", tuple(warnings))


def apply_plan(store: Store, plan: Plan, *, uri: str | None = None, reason: str | None = None) -> list[HistoryEntry]:
    """Apply every action in one transaction (all or nothing); the sentence is the
    reason recorded in the history."""
    why = reason or f"told: {plan.sentence}"
    entries: list[HistoryEntry] = []
    with store.transaction():
        for action in plan.actions:
            entries += action.apply(store, why, uri)
    return entries


def tell(store: Store, sentence: str, sample_id: str | None = None, *, backend: Any = None, apply: bool = True) -> tuple[Plan, list[HistoryEntry]]:
    """The API of ``consist tell``: understand ``sentence`` about ``sample_id`` and
    (unless ``apply=False``) apply it. Returns the plan and the history entries."""
    target = store.get(sample_id) if sample_id is not None else None
    if sample_id is not None and target is None:
        raise FeedbackError(f"{store.uri}: no sample {sample_id!r}")
    image = None
    if backend is not None and target is not None and target.uri:
        from consist.images import load_image
        from consist_semantic.images import encode_image

        image = encode_image(load_image(target, store=store))
    plan = understand(sentence, store, target, backend=backend, image=image)
    return plan, (apply_plan(store, plan) if apply else [])
