"""Spreadsheet-safe CSV cells (OWASP "CSV injection"): what consist writes and reads.

Every CSV consist writes (``audit.csv``, ``label_changes.csv``,
``labels.corrected.csv``, ``consist export``) passes each cell through
:func:`csv_cell`: a cell whose first character (after any single quotes) is ``=``,
``+``, ``-``, ``@``, a tab or a carriage return would be run as a formula by Excel,
LibreOffice or Google Sheets, so it gets one more single quote in front, which they
show as text. :func:`read_csv_cell` undoes it exactly (consist's own CSV reader does,
so ``labels.corrected.csv`` reads back with the original labels); every other cell is
written as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["FORMULA_TRIGGERS", "csv_cell", "read_csv_cell", "safe_csv_row"]

#: First characters that make a spreadsheet read a cell as a formula: ``=1+1``,
#: ``+cmd|' /C calc'!A0``, ``-2+3``, ``@SUM(...)``, a tab, a carriage return.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """``value`` safe for a spreadsheet: ``=HYPERLINK(..)`` -> ``'=HYPERLINK(..)``
    (and ``'=x`` -> ``''=x``, so that the rule is reversible); other cells unchanged."""
    return "'" + value if value.lstrip("'").startswith(FORMULA_TRIGGERS) else value


def read_csv_cell(value: str) -> str:
    """The original of a cell written by :func:`csv_cell`: one leading single quote
    removed when the rest starts (after any further quotes) with a formula trigger."""
    return value[1:] if value.startswith("'") and value.lstrip("'").startswith(FORMULA_TRIGGERS) else value


def safe_csv_row(values: Iterable[Any]) -> list[str]:
    """A row for ``csv.writer``: each value as text (``None`` -> empty) through :func:`csv_cell`."""
    return [csv_cell("" if v is None else str(v)) for v in values]
