"""Request parsing shared by every app's API edge.

Numbers that carry privacy (ε, δ) are read exactly: from a JSON number through its
shortest repr, or from a string, into Decimal; huge exponents are refused before any
exact arithmetic could build a number like 10**999999999.

Text holding NUL (U+0000) is refused wherever it enters: PostgreSQL cannot store it in a
text column, and would answer with a server error.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from rest_framework import negotiation, parsers

from deploy.api.errors import ApiError
from privacy.epsilon import to_micro

MAX_EPSILON = Decimal(1_000_000)  # far above any sane budget, far below the bigint column's range


def object_body(data) -> dict:
    """The parsed JSON body, which must be an object."""
    if not isinstance(data, dict):
        raise ApiError("invalid_body", "The body must be a JSON object.")
    return data


def finite_decimal(value) -> Decimal | None:
    """A finite Decimal of sane magnitude from a JSON number or numeric string, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or (number != 0 and not -30 <= number.adjusted() <= 30):
        return None
    return number


def parse_epsilon_micro(value, field: str = "epsilon") -> int:
    """A positive ε on the 1e-6 grid, at most MAX_EPSILON, from a JSON number or string, as micro-ε."""
    number = finite_decimal(value)
    if number is None or not 0 < number <= MAX_EPSILON:
        raise ApiError("invalid_epsilon", f"{field} must be a number in (0, {MAX_EPSILON}].", field=field)
    try:
        return to_micro(number)
    except (ValueError, ArithmeticError):
        raise ApiError("invalid_epsilon", f"{field} must have at most 6 decimal places.", field=field)


def nul_error(where: str) -> ApiError:
    return ApiError("nul_character", f"The {where} contains a NUL character (\\u0000), which no text may hold.")


def reject_nul(value, where: str = "body") -> None:
    """Raise ``nul_character`` if any string in a parsed JSON value (keys included) holds NUL."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise nul_error(where)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


class JSONParser(parsers.JSONParser):
    """DRF's strict JSON parser, refusing NUL in any string of the body."""

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        reject_nul(data)
        return data


class JSONOnlyNegotiation(negotiation.DefaultContentNegotiation):
    """The API speaks only JSON: answer JSON whatever ``Accept`` asks for, instead of a 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
