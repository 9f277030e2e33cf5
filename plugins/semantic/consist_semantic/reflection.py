"""The ``reflection`` checker: ask a large multimodal model about one label at a time.

LMMs choose badly among many labels and verify one well (An, Kim, Yoon, arXiv
2508.06525), so this checker never asks "what is it?": for each label worth asking
it asks "Does the picture show a/an {label}?", forces a one-token answer, turns the
top log-probabilities into P(yes) and a coverage (:mod:`consist_semantic.yesno`),
and votes ``support = P(yes)`` with ``confidence = coverage``. It abstains on a
label when the coverage is below ``min_coverage`` (the model did not answer yes or
no), and falls back to the text when the server returns no log-probabilities.

Labels worth asking: the leader of the posterior after the cheaper checkers, the
runners-up within ``max_gap`` log-odds of it (at most ``max_labels`` in all), and,
with ``ask_competitor``, the neighbours' strongest other label (the one a
correction would pick). Its ``cost`` is high (2 s) so that it runs last, and the
frontal controller (:mod:`consist_semantic.frontal`) skips it when the decision is
already clear. Answers are cached in the store (:mod:`consist_semantic.cache`).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import structlog

from consist.contracts.checker import Abstain, BaseChecker, CheckContext
from consist.images import load_image
from consist.options import in_unit
from consist.records import Neighbour, Prediction, Vote
from consist_semantic.backends import backend_from_env
from consist_semantic.cache import AnswerCache, ask_cached
from consist_semantic.chat import ChatRequest, LMMBackend, LMMError, LMMUnavailable
from consist_semantic.frontal import FrontalController
from consist_semantic.images import DEFAULT_MAX_SIDE, EncodedImage, encode_image
from consist_semantic.questions import DEFAULT_TEMPLATE, render
from consist_semantic.yesno import YesNo, yes_no_from_logprobs, yes_no_from_text

if TYPE_CHECKING:
    from consist import Store

__all__ = ["Reflection", "ReflectionChecker", "ReflectionConfig"]

log = structlog.get_logger("consist.semantic.reflection")
_unit = in_unit("reflection")


@attrs.frozen
class ReflectionConfig:
    """Options of the reflection checker (``checker_options["reflection"]``).

    Attributes:
        template: the question; ``{a}`` article, ``{label}`` the label's words.
        max_labels: labels in contention asked at most (the leader first).
        max_gap: a runner-up is asked when within this many log-odds of the leader.
        ask_competitor: also ask about the neighbours' strongest other label.
        min_coverage: abstain on a label when P(yes) + P(no) is below this (0.5:
            at least half of the answer's mass must be a yes or a no).
        top_logprobs: alternatives requested for the answer token (20, the most
            OpenAI-compatible servers return).
        max_support: P(yes) is clipped to [1 - max_support, max_support]: one answer
            then weighs at most logit(0.99) = 4.6 log-odds (models are sometimes
            confidently wrong).
        text_support / text_confidence: the vote for a text-only "yes" (and 1 -
            text_support for "no") and its weight, when the server gives no
            log-probabilities.
        weight: multiplies every vote's confidence.
        max_side: longest side of the image sent, in pixels.
        label_texts: label -> words to use in the question (else underscores and
            hyphens become spaces).
    """

    template: str = DEFAULT_TEMPLATE
    max_labels: int = attrs.field(default=2, converter=int)
    max_gap: float = attrs.field(default=4.0, converter=float)
    ask_competitor: bool = True
    min_coverage: float = attrs.field(default=0.5, converter=float, validator=_unit)
    top_logprobs: int = attrs.field(default=20, converter=int)
    max_support: float = attrs.field(default=0.99, converter=float, validator=_unit)
    text_support: float = attrs.field(default=0.85, converter=float, validator=_unit)
    text_confidence: float = attrs.field(default=0.5, converter=float, validator=_unit)
    weight: float = attrs.field(default=1.0, converter=float)
    max_side: int = attrs.field(default=DEFAULT_MAX_SIDE, converter=int)
    label_texts: Mapping[str, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if "{label}" not in self.template:
            raise ValueError("reflection option template must contain {label}")
        if self.max_labels < 1:
            raise ValueError("reflection option max_labels must be >= 1")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], base: ReflectionConfig | None = None) -> ReflectionConfig:
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return attrs.evolve(base or cls(), **dict(options))


@attrs.frozen
class Reflection:
    """One question and what the model answered."""

    label: str
    question: str
    answer: YesNo | None
    cached: bool
    elapsed_s: float


class ReflectionChecker(BaseChecker):
    """Verifies one candidate label at a time with an LMM (see the module docs)."""

    name = "reflection"
    cost = 2.0
    timeout = 180.0
    description = "asks an LMM 'Does the picture show a/an {label}?' for labels in contention (calibrated yes/no)"
    frontal_controlled = True

    def __init__(self, backend: LMMBackend | None = None, *, config: ReflectionConfig | None = None, cache: AnswerCache | None = None, frontal: FrontalController | bool | None = True) -> None:
        self._backend = backend
        self.config = config or ReflectionConfig()
        self.cache = cache if cache is not None else AnswerCache()
        self.frontal: FrontalController | None = FrontalController() if frontal is True else (frontal or None)
        self._lock = threading.Lock()
        self.model_calls = 0
        self.cache_hits = 0
        self.low_coverage = 0

    # ------------------------------------------------------------------ set-up

    @property
    def backend(self) -> LMMBackend:
        """The back-end given, else the one the environment configures (built once)."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = backend_from_env()
        return self._backend

    def validate_options(self, options: Mapping[str, Any]) -> None:
        ReflectionConfig.from_options(options, self.config)

    # --------------------------------------------------------------- questions

    def labels_to_ask(self, prediction: Prediction, neighbours: Sequence[Neighbour], context: CheckContext, config: ReflectionConfig | None = None) -> list[str]:
        """The leader, close runners-up and the neighbours' strongest other label."""
        cfg = config or self.config
        scores = dict(context.scores) or {c.label: c.score for c in prediction.candidates}
        ordered = sorted(scores, key=lambda k: -scores[k])
        labels: list[str] = []
        if ordered:
            lead = scores[ordered[0]]
            labels = [lab for lab in ordered if lead - scores[lab] <= cfg.max_gap][: cfg.max_labels]
        if cfg.ask_competitor:
            mass: dict[str, float] = defaultdict(float)
            for n in neighbours:
                if n.sample.label is not None and n.sample.label not in labels:
                    mass[n.sample.label] += max(0.0, n.similarity)
            if mass:
                labels.append(max(mass, key=lambda k: mass[k]))
        return labels

    def _image(self, prediction: Prediction, context: CheckContext, cfg: ReflectionConfig) -> EncodedImage:
        image = load_image(prediction.query, store=context.store)
        region = prediction.query.region
        if region is not None:  # ask about the region the query is about
            x0, y0, x1, y1 = (int(round(v)) for v in region.bounds)
            h, w = image.shape[:2]
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            if x1 - x0 >= 8 and y1 - y0 >= 8:
                image = image[y0:y1, x0:x1]
        return encode_image(np.asarray(image), max_side=cfg.max_side)

    def reflect(self, image: EncodedImage, label: str, *, config: ReflectionConfig | None = None, store: Store | None = None) -> Reflection:
        """Ask about one label; ``answer`` is ``None`` when the reply was neither yes
        nor no (text without log-probabilities)."""
        cfg = config or self.config
        question = render(label, cfg.template, text=cfg.label_texts.get(label))
        request = ChatRequest(prompt=question, images=(image,), max_tokens=1, temperature=0.0, top_logprobs=cfg.top_logprobs)
        t0 = time.perf_counter()
        answer = ask_cached(self.backend, request, self.cache, store)
        elapsed = time.perf_counter() - t0
        with self._lock:
            if answer.cached:
                self.cache_hits += 1
            else:
                self.model_calls += 1
        if answer.top_logprobs is not None or answer.chosen is not None:
            yn: YesNo | None = yes_no_from_logprobs(answer.top_logprobs or (), answer.chosen)
        else:
            yn = yes_no_from_text(answer.text)
        return Reflection(label, question, yn, answer.cached, elapsed)

    def vote_for(self, r: Reflection, cfg: ReflectionConfig) -> Vote | None:
        """The vote a reflection is worth (``None``: abstain on this label)."""
        yn = r.answer
        if yn is None:
            return None
        evidence = {
            "question": r.question,
            "p_yes": round(yn.p_yes, 6),
            "coverage": None if yn.coverage is None else round(yn.coverage, 6),
            "token": yn.token,
            "method": yn.method,
            "cached": r.cached,
            "model": self.backend.model,
        }
        lo, hi = 1.0 - cfg.max_support, cfg.max_support
        if yn.method == "invalid":  # not a distribution (e.g. +50 for "yes"): abstain
            return None
        if yn.method == "text":
            support = cfg.text_support if yn.p_yes >= 0.5 else 1.0 - cfg.text_support
            return self.vote(r.label, support, min(1.0, cfg.text_confidence * cfg.weight), evidence=evidence)
        if (yn.coverage or 0.0) < cfg.min_coverage:
            return None
        support = min(hi, max(lo, yn.p_yes))
        return self.vote(r.label, support, min(1.0, float(yn.coverage or 0.0) * cfg.weight), evidence=evidence)

    def _ask_all(self, image: EncodedImage, labels: Sequence[str], cfg: ReflectionConfig, store: Store | None) -> list[Reflection | BaseException]:
        """The questions of one query, concurrently (the back-end bounds how many are
        in flight; a server batches them), answers in the order of ``labels``."""

        def one(label: str) -> Reflection | BaseException:
            try:
                return self.reflect(image, label, config=cfg, store=store)
            except LMMError as exc:
                return exc

        if len(labels) == 1:
            return [one(labels[0])]
        # daemon threads, not a ThreadPoolExecutor: its workers are joined at exit, so
        # one stuck in a socket read (a back-end without a deadline) would keep the
        # process alive after the engine gave up on the checker
        out: list[Reflection | BaseException] = [LMMError("no answer")] * len(labels)

        def run(i: int) -> None:
            out[i] = one(labels[i])

        threads = [threading.Thread(target=run, args=(i,), name="consist-reflection", daemon=True) for i in range(len(labels))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    # ------------------------------------------------------------------- check

    def check(self, prediction: Prediction, neighbours: Sequence[Neighbour], context: CheckContext) -> Sequence[Vote]:
        cfg = ReflectionConfig.from_options(context.config, self.config) if context.config else self.config
        try:
            backend = self.backend
        except LMMUnavailable as exc:
            raise Abstain(str(exc)) from None
        labels = self.labels_to_ask(prediction, neighbours, context, cfg)
        if not labels:
            raise Abstain("no label to ask about")
        image = self._image(prediction, context, cfg)
        votes: list[Vote] = []
        silent: list[str] = []
        answers: dict[str, float] = {}
        outcomes = self._ask_all(image, labels, cfg, context.store)
        failures = [(label, r) for label, r in zip(labels, outcomes) if isinstance(r, BaseException)]
        if len(failures) == len(labels):
            raise failures[0][1]  # the model could not be asked at all: a recorded failure
        for label, err in failures:  # keep what was answered; say what was not
            log.warning("reflection_failed", query=prediction.query.id, label=label, model=backend.model, error=str(err))
            silent.append(f"{label}: {err}")
        for label, r in zip(labels, outcomes):
            if isinstance(r, BaseException):
                continue
            v = self.vote_for(r, cfg)
            if r.answer is not None:
                answers[label] = r.answer.p_yes
            if v is None:
                with self._lock:
                    self.low_coverage += 1
                if r.answer is None:
                    cov = "no yes/no in the text"
                elif r.answer.method == "invalid":
                    cov = f"invalid log-probabilities ({r.answer.problem})"
                else:
                    cov = f"coverage {r.answer.coverage:.2f} < {cfg.min_coverage:g}"
                silent.append(f"{label}: {cov}")
                continue
            votes.append(v)
        context.signals["reflection_p_yes"] = answers
        if not votes:
            raise Abstain("; ".join(silent) or "no answer")
        return votes
