"""Parsing of the command line's shared option formats (``Z,Y,X`` triples)."""

from __future__ import annotations

from wiremap.errors import InputError


def parse_triple(text: str, what: str, cast: type = float) -> tuple:
    """``"30,4,4"`` -> ``(30.0, 4.0, 4.0)``; a clear error naming ``what`` otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise InputError(f"{what} must be three comma-separated values Z,Y,X, got {text!r}")
    try:
        values = tuple(cast(p) for p in parts)
    except ValueError:
        raise InputError(f"{what} must be numbers Z,Y,X, got {text!r}") from None
    if min(values) <= 0:
        raise InputError(f"{what} must be positive, got {text!r}")
    return values


def parse_shape(text: str, what: str = "--shape") -> tuple[int, int, int]:
    return parse_triple(text, what, int)  # type: ignore[return-value]


def parse_resolution(text: str, what: str = "--resolution") -> tuple[float, float, float]:
    return parse_triple(text, what, float)  # type: ignore[return-value]
