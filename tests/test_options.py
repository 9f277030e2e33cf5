"""The shared option validators give every plugin the same one-line errors."""

from __future__ import annotations

import attrs
import pytest

from consist.options import in_unit, positive


@attrs.frozen
class _Opts:
    share: float = attrs.field(default=0.5, validator=in_unit("demo"))
    scale: float = attrs.field(default=1.0, validator=positive("demo"))


def test_in_unit_and_positive() -> None:
    assert _Opts(0.0, 1e-9) == _Opts(share=0.0, scale=1e-9)
    _Opts(share=1.0)
    with pytest.raises(ValueError, match=r"^demo option share must be in \[0, 1\], got 1.5$"):
        _Opts(share=1.5)
    with pytest.raises(ValueError, match=r"^demo option scale must be > 0, got 0$"):
        _Opts(scale=0)
