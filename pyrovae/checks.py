"""Argument checks: each raises one ``ValueError`` naming the argument, what was expected and
what came. A leaf module (imports nothing from pyrovae), so every layer can use it.

``bool`` is an ``int`` subclass in Python; a flag passed where a count is meant is a mistake,
so these refuse it.
"""

from __future__ import annotations

import math


def is_int(value) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value, name: str, *, allow_none: bool = False) -> None:
    """``value`` is an int >= 1 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if not is_int(value) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def int_at_least(value, name: str, minimum: int, *, allow_none: bool = False) -> None:
    """``value`` is an int >= ``minimum`` (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def int_in(value, name: str, low: int, high: int) -> None:
    """``value`` is an int in the closed range ``[low, high]``."""
    if not is_int(value) or not low <= value <= high:
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")


_BOUNDS = ("()", "[]", "[)", "(]")


def number_in(value, name: str, low: float = 0.0, high: float = math.inf, *,
              bounds: str = "()", allow_none: bool = False) -> None:
    """``value`` is a number in ``(low, high)``, ends closed as ``bounds`` says (NaN is not)."""
    if bounds not in _BOUNDS:
        raise ValueError(f"bounds: expected one of {list(_BOUNDS)}, got {bounds!r}")
    if value is None and allow_none:
        return
    ok = is_number(value) \
        and (low <= value if bounds[0] == "[" else low < value) \
        and (value <= high if bounds[1] == "]" else value < high)
    if not ok:
        raise ValueError(f"{name}: expected a number in {bounds[0]}{low:g}, {high:g}{bounds[1]}, "
                         f"got {value!r}")


def positive_number(value, name: str) -> None:
    """``value`` is a number > 0, infinity included (NaN is not)."""
    if not is_number(value) or not value > 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")


def number_at_least(value, name: str, minimum: float) -> None:
    """``value`` is a number ``>= minimum``, infinity included (NaN is not)."""
    if not is_number(value) or not value >= minimum:
        raise ValueError(f"{name}: expected a number >= {minimum:g}, got {value!r}")


def _finite(value) -> bool:
    """``math.isfinite``, and False for an int too large to be a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def finite_number(value, name: str, *, minimum: float | None = None,
                  positive: bool = False) -> None:
    """``value`` is a number finite as a float, ``>= minimum`` if given, ``> 0`` if ``positive``."""
    ok = is_number(value) and _finite(value) \
        and (minimum is None or value >= minimum) and (not positive or value > 0)
    if not ok:
        what = "a finite number" + (" > 0" if positive else "") + \
            (f" >= {minimum:g}" if minimum is not None else "")
        raise ValueError(f"{name}: expected {what}, got {value!r}")


def one_of(value, options, name: str) -> None:
    """``value`` is one of ``options``."""
    if value not in options:
        shown = sorted(options) if isinstance(options, (set, frozenset, dict)) else list(options)
        raise ValueError(f"{name}: expected one of {shown}, got {value!r}")


def boolean(value, name: str) -> None:
    """``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
