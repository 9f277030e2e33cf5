"""Turning a label into a question: readable text and the right article.

"Does the picture show a/an {label}?" (the reflection question of An, Kim, Yoon,
arXiv 2508.06525) needs "an owl", "a unicorn", "an hour glass", "an FBI van", and
no article before "the Eiffel Tower"; dataset labels (``radcliffe_camera``) are
read as words.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_TEMPLATE", "article", "label_text", "render"]

#: The reflection question. ``{a}`` is the article (possibly empty), ``{label}`` the
#: label's text; the second sentence makes a one-token answer the natural one.
DEFAULT_TEMPLATE = "Does the picture show {a} {label}? Answer yes or no."

_CONSONANT_SOUND_VOWELS = re.compile(r"^(uni|use|usu|uti|ure|uro|eu|ewe|one|once|ouija|u[bcdfgjklmnpqrstvwxyz][aeiou])", re.IGNORECASE)
_SILENT_H = re.compile(r"^(hour|honest|honou?r|heir)", re.IGNORECASE)
_VOWEL_LETTER_NAMES = set("AEFHILMNORSX")  # letters whose names start with a vowel sound


def label_text(label: str) -> str:
    """``"radcliffe_camera-oxford"`` -> ``"radcliffe camera oxford"``."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", label)).strip()


def article(text: str) -> str:
    """``"a"``, ``"an"`` or ``""`` (for "the ...", "my ...", plural-looking names)."""
    words = text.split()
    if not words:
        return "a"
    first = words[0]
    if first.lower() in ("the", "a", "an", "my", "our", "your", "his", "her", "their", "this", "that", "some"):
        return ""
    if first[0].isdigit():
        return "an" if re.match(r"^(8|11|18|8\d|11\d\d|18\d\d)(\D|$)", first) else "a"
    if 1 < len(first) <= 3 and first.isupper() and first.isalpha():  # "FBI", "SUV": spelt out
        return "an" if first[0] in _VOWEL_LETTER_NAMES else "a"
    first = first.lower()  # longer capitals ("NASA", "UNESCO") are read as words
    if _SILENT_H.match(first):
        return "an"
    if first[0].lower() in "aeiou" and not _CONSONANT_SOUND_VOWELS.match(first):
        return "an"
    return "a"


def render(label: str, template: str = DEFAULT_TEMPLATE, *, text: str | None = None) -> str:
    """The question for ``label`` (``text`` overrides its readable form)."""
    words = text if text is not None else label_text(label)
    q = template.format(a=article(words), label=words)
    return re.sub(r" {2,}", " ", q)
