"""Value checks shared by config structs and constructors: finite numbers, integers, ranges.

Each check raises ``PolicyError`` at the key path it is given, saying what was expected and
what was got, so the same check reads well whether it runs in a constructor
(``$.backends.NAME.input_price``) or in a struct's ``__post_init__`` (``$.input_price``,
which ``decode_toml`` then prefixes with the path of the struct: ``$.backends[0].input_price``).
NaN and infinities are never accepted: a NaN compares false with everything, so it slips
past every range check written as ``value < 0``, and an infinite window, price or cooldown
is always a mistake (leave the setting out instead).
"""

from __future__ import annotations

import math

from ._errors import PolicyError


def _field(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def _range(ge: float | None, gt: float | None, le: float | None) -> str:
    low = f"[{ge:g}" if ge is not None else f"({gt:g}" if gt is not None else None
    if le is not None and low is not None:
        return f"in {low}, {le:g}]"
    if ge is not None:
        return f">= {ge:g}"
    if gt is not None:
        return f"> {gt:g}"
    if le is not None:
        return f"<= {le:g}"
    return ""


def is_number(value: object) -> bool:
    """A real number (``int`` or ``float``, not ``bool``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(
    value: object,
    path: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    unit: str = "",
    what: str | None = None,
) -> float:
    """``value`` as a float if it is a finite number within the bounds, else ``PolicyError`` at ``path``."""
    ok = is_number(value)
    if ok:
        x = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(x) and (ge is None or x >= ge) and (gt is None or x > gt) and (le is None or x <= le)
    if not ok:
        bounds = _range(ge, gt, le)
        unit_text = f" ({unit})" if unit else ""
        raise PolicyError(
            f"{what or _field(path)} must be a finite number{' ' + bounds if bounds else ''}{unit_text}, got {value!r}",
            path=path,
        )
    return float(value)  # type: ignore[arg-type]


def check_int(
    value: object, path: str, *, ge: int | None = None, le: int | None = None, why: str = "", what: str | None = None
) -> int:
    """``value`` if it is an ``int`` (not ``bool``) within the bounds, else ``PolicyError`` at ``path``."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and ((ge is not None and value < ge) or (le is not None and value > le)):  # type: ignore[operator]
        ok = False
    if not ok:
        if ge is not None and le is not None:
            bounds = f"from {ge} to {le}"
        elif ge is not None:
            bounds = f">= {ge}" if ge != 1 else "at least 1"
        else:
            bounds = f"<= {le}" if le is not None else ""
        raise PolicyError(
            f"{what or _field(path)} must be an integer{' ' + bounds if bounds else ''}, got {value!r}{why}", path=path
        )
    return value  # type: ignore[return-value]


def check_finite_fields(struct: object, path: str = "$") -> None:
    """Every ``float`` field of a msgspec struct is finite (for structs validated elsewhere,
    whose new float fields are then covered too)."""
    for name in getattr(struct, "__struct_fields__", ()):
        value = getattr(struct, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise PolicyError(
                f"{name} must be a finite number, got {value!r} (leave it out for the default)", path=f"{path}.{name}"
            )
