"""``{% load admin_tags %}``: figures of the admins' pages."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


def delta_text(value) -> str:
    """A δ as short text: 0.000001000000000000 as "0.000001", 1e-10 as "1E-10"."""
    return format(Decimal(str(value)).normalize(), "g")


register.filter("delta", delta_text)
