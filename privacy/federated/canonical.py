"""The one canonical JSON encoding: RFC 8785, the JSON Canonicalization Scheme (JCS).

``canonical_bytes(obj)`` is exactly what gets signed and logged. Two parties holding the same JSON
value produce the same bytes, whatever key order, whitespace or number spelling they started from.

* Objects: members sorted by their keys' UTF-16 code units (RFC 8785 §3.2.3), no whitespace.
* Strings: JSON escaping as ECMAScript's ``JSON.stringify`` (RFC 8785 §3.2.2.2): ``\\"``, ``\\\\``,
  ``\\b \\t \\n \\f \\r``, other control characters as ``\\u00xx`` (lowercase hex), everything else
  verbatim. Lone surrogates are refused: RFC 8785 requires I-JSON, hence valid Unicode.
* Numbers: IEEE 754 doubles written as ECMAScript's ``Number.prototype.toString`` (RFC 8785
  §3.2.2.3). NaN and infinities are refused. A Python ``int`` must lie in the I-JSON exact range
  |n| <= 2**53 (RFC 7493 §2.2), where its ECMAScript form is its exact decimal digits; a larger one is
  refused rather than rounded to a double, which would sign a different number than the caller holds
  (send such values as strings).
* ``true``, ``false``, ``null``; lists and tuples are arrays; object keys must be strings.
* Output: UTF-8.

:func:`loads` is the matching reader: JSON numbers as JCS sees them (doubles; integers beyond
±2**53 come back as the double they denote, not as an exact ``int`` that :func:`canonical_bytes`
would refuse), no NaN or infinities, no duplicate keys (I-JSON, RFC 7493 §2.3). Parse what a
signature covers with it, so that ``canonical_bytes(loads(text))`` is the signed form of ``text``.
"""

from __future__ import annotations

import json
import math
import re

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
# RFC 8785 §3.2.2.2: the short escapes above, \u00xx for the other control characters, nothing else.
_ESCAPES = {chr(code): _SHORT_ESCAPES.get(chr(code), f"\\u{code:04x}") for code in range(0x20)}
_ESCAPES |= _SHORT_ESCAPES
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
MAX_EXACT_INTEGER = 2**53


class CanonicalizationError(ValueError):
    """The value has no RFC 8785 form (NaN, infinity, an inexact integer, a lone surrogate, a foreign type)."""


def canonical_bytes(obj) -> bytes:
    """The RFC 8785 (JCS) encoding of ``obj``, UTF-8."""
    parts: list[str] = []
    _write(obj, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (e.g. from json.loads('"\\ud800"'))
        raise CanonicalizationError(f"not valid Unicode: {exc.reason}") from None


def loads(text: str | bytes):
    """Parse JSON under JCS's data model (see the module docstring); raise ValueError on anything else."""
    return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant,
                      object_pairs_hook=_refuse_duplicate_keys)


def _parse_int(text: str) -> int | float:
    value = int(text)
    return value if abs(value) <= MAX_EXACT_INTEGER else _parse_float(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CanonicalizationError(f"{text} overflows an IEEE 754 double")
    return value


def _refuse_constant(name: str):
    raise CanonicalizationError(f"{name} is not JSON")


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise CanonicalizationError("duplicate object key")
    return obj


def _write(obj, parts: list[str]) -> None:
    kind = type(obj)  # the common exact types first; subclasses (bool, numpy scalars) take the chain below
    if kind is float:
        parts.append(es_number(obj))
    elif kind is str:
        parts.append(_string(obj))
    elif kind is list and obj and all(type(item) is float for item in obj):  # a weight vector
        parts.append(_float_array(obj))
    elif obj is None:
        parts.append("null")
    elif obj is True:
        parts.append("true")
    elif obj is False:
        parts.append("false")
    elif isinstance(obj, str):
        parts.append(_string(obj))
    elif isinstance(obj, int):
        parts.append(_integer(obj))
    elif isinstance(obj, float):
        parts.append(es_number(obj))
    elif isinstance(obj, dict):
        _write_object(obj, parts)
    elif isinstance(obj, (list, tuple)):
        parts.append("[")
        for position, item in enumerate(obj):
            if position:
                parts.append(",")
            _write(item, parts)
        parts.append("]")
    else:
        raise CanonicalizationError(f"{type(obj).__name__} has no JSON form")


def _write_object(obj: dict, parts: list[str]) -> None:
    if not all(isinstance(key, str) for key in obj):
        raise CanonicalizationError("object keys must be strings")
    # RFC 8785 §3.2.3: sort by UTF-16 code units; big-endian UTF-16 bytes compare in that order.
    keys = sorted(obj, key=lambda key: key.encode("utf-16-be", "surrogatepass"))
    parts.append("{")
    for position, key in enumerate(keys):
        if position:
            parts.append(",")
        parts.append(_string(key))
        parts.append(":")
        _write(obj[key], parts)
    parts.append("}")


_FLOAT_ARRAY = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _float_array(values: list[float]) -> str:
    """A list of floats: the C encoder writes each with ``float.__repr__``; when none needs an exponent, ECMA-262's
    layout is that text less each whole number's ".0" (and -0 is 0). Otherwise ``es_number`` one by one."""
    try:
        text = _FLOAT_ARRAY.encode(values)
    except ValueError:
        raise CanonicalizationError("NaN and infinities have no JSON form") from None
    if "e" in text:
        return "[" + ",".join(map(es_number, values)) + "]"
    return text.replace(".0,", ",").replace(".0]", "]").replace("-0,", "0,").replace("-0]", "0]")


def _string(text: str) -> str:
    # RFC 8785 §3.2.2.2
    return '"' + _NEEDS_ESCAPE.sub(lambda match: _ESCAPES[match.group()], text) + '"'


def _integer(value: int) -> str:
    # RFC 8785 §3.2.2.3 with I-JSON's exact range (RFC 7493 §2.2): there ES output is the integer's digits.
    if abs(value) > MAX_EXACT_INTEGER:
        raise CanonicalizationError(f"integer {value} is outside ±2**53: a double cannot hold it exactly")
    return str(value)


def es_number(value: float) -> str:
    """ECMAScript ``Number.prototype.toString`` of a finite double (RFC 8785 §3.2.2.3, ECMA-262 Number::toString).

    Python's ``repr`` gives the shortest digit string that round-trips (ties to even), which is the
    digit string ECMA-262 asks for; only the layout (plain or exponent form) differs.
    """
    if not math.isfinite(value):
        raise CanonicalizationError(f"{value} has no JSON form")
    if value == 0:
        return "0"  # -0 too
    text = repr(value)
    if "e" not in text:  # 1e-4 <= |value| < 1e16: repr's plain layout is ECMA-262's, less a trailing ".0"
        return text[:-2] if text.endswith(".0") else text
    return _es_layout(value)


def _es_layout(value: float) -> str:
    """ECMA-262's layout of a finite, non-zero double's shortest digits, for any exponent."""
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent or 0)  # value = 0.<digits> * 10**point
    significant = digits.lstrip("0")
    point -= len(digits) - len(significant)
    digits = significant.rstrip("0")
    k, n = len(digits), point  # ECMA-262's k (digit count) and n (decimal exponent)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    exponent_text = f"e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    if k == 1:
        return sign + digits + exponent_text
    return sign + digits[0] + "." + digits[1:] + exponent_text
