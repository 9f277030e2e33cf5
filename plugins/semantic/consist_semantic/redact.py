"""Keeping API keys out of logs, errors and reprs.

A server may echo the key back in any spelling: verbatim, JSON-escaped
(``\\u0073k-...``, ``\\/``), percent-encoded, as HTML character references, or
split by a truncation. :func:`redact` matches each secret in every one of these
spellings, character by character (each character may be written in any of
them), so callers must redact the *whole* text first and only then truncate it
(:func:`redact_snippet`): cutting first could leave a prefix of the key that no
longer matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["mask", "redact", "redact_snippet"]

_BEARER = re.compile(r"(?i)(bearer\s+|api[-_]?key[\"'=:\s]+)([A-Za-z0-9._\-]{8,})")


def mask(secret: str | None) -> str:
    """``"sk-abc...xyz"`` -> ``"***"`` (nothing of a key is shown, not even its end)."""
    return "***" if secret else "(none)"


def _char_forms(ch: str) -> str:
    """A regex matching ``ch`` in every escaped spelling a server might use."""
    code = ord(ch)
    forms = {
        re.escape(ch),
        rf"\\+u0*{code:x}",  # JSON / JavaScript \uXXXX (any case; escaped again: \\uXXXX)
        rf"\\+x{code:02x}",  # Python / C \xXX
        rf"%{code:02x}",  # URL percent-encoding
        rf"&#0*{code};",  # HTML decimal reference
        rf"&#x0*{code:x};",  # HTML hex reference
        rf"\\+{re.escape(ch)}",  # a backslash-escaped character (JSON's \/)
    }
    if ch == "+":
        forms.add(r"%2b")
    if ch == " ":
        forms.add(r"\+")
    return "(?:" + "|".join(sorted(forms)) + ")"


@lru_cache(maxsize=32)
def _secret_pattern(secret: str) -> re.Pattern[str]:
    # case-insensitive: the escapes' hex digits may be either case (and a key
    # echoed upper-cased is still the key)
    return re.compile("".join(_char_forms(ch) for ch in secret), re.IGNORECASE)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Replace every given secret (in any escaped spelling), and anything that looks
    like a bearer token or an ``api_key=...`` value, with ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
            text = _secret_pattern(s).sub("***", text)
    return _BEARER.sub(lambda m: m.group(1) + "***", text)


def redact_snippet(text: str, secrets: Iterable[str | None] = (), limit: int = 300) -> str:
    """``text`` redacted, then cut to ``limit`` characters (in this order: a key cut
    in two by the limit would otherwise leak its first part), on one line."""
    clean = redact(text, secrets).replace("\r", " ").replace("\n", " ")
    return clean if len(clean) <= limit else clean[:limit] + "..."
