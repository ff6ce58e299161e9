"""Template filters of the pages."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import template

register = template.Library()


@register.filter
def eps(value) -> str:
    """An ε or budget figure as the ledger keeps it (at most 6 decimals), without trailing zeros: 1.5, 10, 0.000001."""
    if value is None or value == "":
        return ""
    try:
        number = Decimal(str(value)).quantize(Decimal("0.000001"))
    except (InvalidOperation, ValueError):
        return str(value)
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
