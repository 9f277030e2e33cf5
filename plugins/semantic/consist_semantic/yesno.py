"""A calibrated yes/no from one forced answer token (DESIGN.md 3.4).

The model is asked for a single token at temperature 0 with the top log-probabilities
of that token (``top_logprobs``, 20 on OpenAI-compatible servers). A model spreads
its "yes" over several spellings (``Yes``, `` yes``, ``YES``, ``▁Yes``, ``yes.``, or
a split ``Y``/``Ye``), so the probability of every spelling of yes is summed, and
likewise for no:

* ``p_yes = P(yes) / (P(yes) + P(no))`` is the answer;
* ``coverage = P(yes) + P(no)`` says how much of the model's mass went to an answer
  at all: a model that starts with "The", "<think>" or "I cannot" has low coverage,
  and its "answer" is no answer (the checker abstains below ``min_coverage``).

Log-probabilities are validated first: a server (or a proxy) that returns a
positive log-probability, a NaN, more alternatives than any server lists
(:data:`MAX_ALTERNATIVES`), or alternatives whose probabilities sum past 1 (100,000
copies of "yes") has not given a distribution, and its answer is ``"invalid"``:
the checker abstains instead of voting with full confidence.

Servers that give no log-probabilities (some hosted APIs, old Ollama) fall back to
parsing the text: a plain "yes"/"no" is a hard answer with no coverage figure, which
the checker turns into a vote of fixed, modest strength.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["MAX_ALTERNATIVES", "NO_SPELLINGS", "YES_SPELLINGS", "YesNo", "check_logprobs", "normalise_token", "yes_no_from_logprobs", "yes_no_from_text"]

#: Spellings of yes after :func:`normalise_token` (case-folded, markers and punctuation
#: stripped). ``y``/``ye`` are the prefixes a tokeniser may split "Yes" into: with a
#: one-token answer to a yes/no question they can only be the start of "yes".
YES_SPELLINGS = frozenset({"yes", "ye", "y", "yeah", "yep", "yea", "true"})
#: Spellings of no; ``n`` is the split prefix of "No".
NO_SPELLINGS = frozenset({"no", "n", "nope", "nah", "false"})

#: Alternatives of one token accepted at most (OpenAI allows 20, vLLM's default cap
#: is 20; a few hundred leaves room for any server configured higher).
MAX_ALTERNATIVES = 256
#: Slack for rounding: a log-probability up to this above 0, total mass up to 1 + this.
_TOLERANCE = 1e-3

# SentencePiece (▁), GPT-2 byte-level BPE (Ġ, Ċ) word markers, quotes, punctuation
_STRIP = re.compile(r"^[\s▁Ġ\u0120\u010a\"'`*(\[]+|[\s\"'`*.,!?:;)\]]+$")


def normalise_token(token: str) -> str:
    """``" Yes."`` / ``"▁YES"`` / ``"Ġyes"`` -> ``"yes"``."""
    return _STRIP.sub("", token).casefold()


def _classify(token: str) -> str | None:
    t = normalise_token(token)
    if t in YES_SPELLINGS:
        return "yes"
    if t in NO_SPELLINGS:
        return "no"
    return None


@attrs.frozen
class YesNo:
    """A yes/no answer: ``p_yes`` in [0, 1], ``coverage`` (``None`` for a text-only
    answer), the answer's first token, and how it was obtained (``"logprobs"`` or
    ``"text"``)."""

    p_yes: float
    coverage: float | None
    token: str
    method: str
    problem: str | None = None  # why the log-probabilities were refused (method "invalid")

    @property
    def answered(self) -> bool:
        return self.method == "text" or (self.method == "logprobs" and (self.coverage or 0.0) > 0.0)


def check_logprobs(entries: Sequence[tuple[str, float]]) -> str | None:
    """Why ``entries`` are not the top of a probability distribution (``None``: they are)."""
    if len(entries) > MAX_ALTERNATIVES:
        return f"{len(entries)} alternatives for one token (more than {MAX_ALTERNATIVES})"
    total = 0.0
    for token, logprob in entries:
        if logprob is None or math.isnan(logprob) or logprob > _TOLERANCE:
            return f"log-probability {logprob!r} of {token[:20]!r} is not <= 0"
        if math.isfinite(logprob):
            total += math.exp(logprob)
    if total > 1.0 + _TOLERANCE:
        return f"the alternatives' probabilities sum to {total:.3g} > 1"
    return None


def yes_no_from_logprobs(top: Iterable[tuple[str, float]], chosen: tuple[str, float] | None = None) -> YesNo:
    """Sum the mass of every spelling of yes and of no among the top tokens.

    ``top`` holds ``(token, logprob)`` alternatives for the first answer token;
    ``chosen`` is the token actually produced (added when the server left it out of
    its own top list). A token listed twice (two ids decoding to the same text) is
    counted once per listing: they are distinct tokens with distinct mass.
    """
    entries = list(top)
    if chosen is not None and all(t != chosen[0] for t, _ in entries):
        entries.append(chosen)
    first = chosen[0] if chosen is not None else (entries[0][0] if entries else "")
    problem = check_logprobs(entries) or (None if chosen is None else check_logprobs([chosen]))
    if problem is not None:
        return YesNo(0.5, 0.0, first, "invalid", problem)
    p_yes = p_no = 0.0
    for token, logprob in entries:
        if logprob is None or not math.isfinite(logprob):
            continue
        kind = _classify(token)
        if kind == "yes":
            p_yes += math.exp(logprob)
        elif kind == "no":
            p_no += math.exp(logprob)
    coverage = min(1.0, p_yes + p_no)
    if p_yes + p_no <= 0.0:
        return YesNo(0.5, 0.0, first, "logprobs")
    return YesNo(p_yes / (p_yes + p_no), coverage, first, "logprobs")


def yes_no_from_text(text: str) -> YesNo | None:
    """Parse a text answer ("Yes.", "no, it is a ...", "<think>..</think> Yes");
    ``None`` when it is neither."""
    body = re.sub(r"<think>.*?</think>", " ", text or "", flags=re.DOTALL | re.IGNORECASE).strip()
    words = re.findall(r"[^\W\d_]+", body)
    if not words:
        return None
    kind = _classify(words[0])
    if kind is None or (len(words[0]) == 1 and len(words) > 1):  # "N of the..." is no answer
        return None
    return YesNo(1.0 if kind == "yes" else 0.0, None, words[0], "text")


def top_from_openai(choice_logprobs: object) -> tuple[list[tuple[str, float]], tuple[str, float] | None] | None:
    """``choices[0].logprobs`` of a chat completion -> (top alternatives, chosen) for
    the first content token; ``None`` when the server gave none."""
    if not isinstance(choice_logprobs, dict):
        return None
    content = choice_logprobs.get("content")
    if not isinstance(content, Sequence) or not content or not isinstance(content[0], dict):
        return None
    first = content[0]
    chosen = None
    if isinstance(first.get("token"), str) and isinstance(first.get("logprob"), (int, float)):
        chosen = (first["token"], float(first["logprob"]))
    top = []
    alternatives = first.get("top_logprobs") or ()
    if not isinstance(alternatives, Sequence):
        alternatives = ()
    for alt in alternatives[: MAX_ALTERNATIVES + 1]:  # one more than accepted: flagged, not parsed whole
        if isinstance(alt, dict) and isinstance(alt.get("token"), str) and isinstance(alt.get("logprob"), (int, float)):
            top.append((alt["token"], float(alt["logprob"])))
    if not top and chosen is None:
        return None
    return top, chosen
