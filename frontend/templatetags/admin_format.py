"""``{% load admin_format %}``: figures of the admins' pages as plain decimals."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def eps(value) -> str:
    """An ε, δ or budget figure without float noise or trailing zeros: 3.500000 as "3.5", 1e-06 kept short."""
    if value is None or value == "":
        return ""
    number = Decimal(str(value)).normalize()
    return format(number, "f") if number.adjusted() >= -6 else format(number, "g")
