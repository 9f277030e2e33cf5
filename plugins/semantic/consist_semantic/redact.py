"""Keeping API keys out of logs, errors and reprs."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["mask", "redact"]

_BEARER = re.compile(r"(?i)(bearer\s+|api[-_]?key[\"'=:\s]+)([A-Za-z0-9._\-]{8,})")


def mask(secret: str | None) -> str:
    """``"sk-abc...xyz"`` -> ``"***"`` (nothing of a key is shown, not even its end)."""
    return "***" if secret else "(none)"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Replace every given secret, and anything that looks like a bearer token or an
    ``api_key=...`` value, with ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return _BEARER.sub(lambda m: m.group(1) + "***", text)
