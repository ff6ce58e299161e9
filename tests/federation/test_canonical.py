"""RFC 8785 (JCS) canonical JSON: the RFC's own examples and vectors, then properties over random values. Pure."""

from __future__ import annotations

import json
import math
import random
import struct
from decimal import Decimal

import pytest

from privacy.federated.canonical import CanonicalizationError, canonical_bytes, es_number, loads

# RFC 8785 Appendix B: IEEE 754 bit pattern -> ECMAScript serialization.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),  # round to even
]


def from_bits(hex_bits: str) -> float:
    return struct.unpack(">d", bytes.fromhex(hex_bits))[0]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(bits, expected):
    assert canonical_bytes(from_bits(bits)) == expected.encode("ascii")


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinities_are_refused(bits):
    with pytest.raises(CanonicalizationError):
        canonical_bytes({"x": [from_bits(bits)]})


def test_rfc8785_sample_object():
    # RFC 8785 §3.2.2: the sample input and its canonical form.
    text = r'''{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }'''
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert canonical_bytes(json.loads(text)) == expected.encode("utf-8")


def test_rfc8785_sorting_by_utf16_code_units():
    # RFC 8785 §3.2.3: the emoji (surrogates D83D DE00) sorts before U+FB33, unlike by code point.
    value = json.loads(r'''{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis"}''')
    order = [item for item in json.loads(canonical_bytes(value)).values()]
    assert order == ["Carriage Return", "One", "Control", "Latin Small Letter O With Diaeresis", "Euro Sign",
                     "Emoji: Grinning Face", "Hebrew Letter Dalet With Dagesh"]


def test_string_escapes_follow_json_stringify():
    controls = "".join(chr(code) for code in range(0x20))
    expected = ('"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f'
                '\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c'
                '\\u001d\\u001e\\u001f"')
    assert canonical_bytes(controls) == expected.encode()
    assert canonical_bytes('"\\/\x7f\u2028é😀') == '"\\"\\\\/\x7f\u2028é😀"'.encode("utf-8")


@pytest.mark.parametrize(("value", "expected"), [
    (True, b"true"), (False, b"false"), (None, b"null"), (0, b"0"), (-0.0, b"0"), (1.0, b"1"), (-7, b"-7"),
    (2**53, b"9007199254740992"), (-(2**53), b"-9007199254740992"), (2.0**60, b"1152921504606847000"),
    (1e21, b"1e+21"), (1e-7, b"1e-7"),
    ([], b"[]"), ({}, b"{}"), ((1, "a"), b'[1,"a"]'), ({"b": {"d": 1, "c": 2}, "a": []}, b'{"a":[],"b":{"c":2,"d":1}}'),
])
def test_literals_and_integers(value, expected):
    assert canonical_bytes(value) == expected


@pytest.mark.parametrize("value", [2**53 + 1, -(2**53 + 1), 2**60, 10**400, {1: "x"}, {"x": b"bytes"}, {"x": {1, 2}},
                                   Decimal("1.5"), "\ud800", {"\udc00": 1}])
def test_values_without_a_canonical_form_are_refused(value):
    with pytest.raises(CanonicalizationError):
        canonical_bytes(value)


# --- properties -----------------------------------------------------------------------------------


def es_layout_from_decimal(value: float) -> str:
    """An independent ECMA-262 Number::toString layout, from Decimal's digits instead of parsing repr text."""
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digits))
    k, n = len(digits), len(digits) + exponent
    body = (digits + "0" * (n - k) if k <= n <= 21 else digits[:n] + "." + digits[n:] if 0 < n <= 21
            else "0." + "0" * -n + digits if -6 < n <= 0
            else (digits[0] + ("." + digits[1:] if k > 1 else "")) + ("e+" if n - 1 >= 0 else "e-") + str(abs(n - 1)))
    return ("-" if value < 0 else "") + body


def test_random_doubles_round_trip_with_the_shortest_digits():
    rng = random.Random(8785)
    patterns = [rng.getrandbits(64) for _ in range(20_000)]
    patterns += [struct.unpack(">Q", struct.pack(">d", rng.choice([1, -1]) * 10.0 ** rng.randint(-30, 30)))[0]
                 for _ in range(2_000)]
    checked = 0
    for bits in patterns:
        value = struct.unpack(">d", bits.to_bytes(8, "big"))[0]
        if not math.isfinite(value):
            continue
        text = es_number(value)
        assert float(text) == value, text  # round trip
        assert loads(text) == value
        assert text == es_layout_from_decimal(value), (value, text)
        checked += 1
    assert checked > 20_000


KEY_ALPHABET = "aZ09 \"\\/\n\t\x00\x1f\x7fé€😀\u2028\ufb33"


def random_string(rng: random.Random) -> str:
    return "".join(rng.choice(KEY_ALPHABET) for _ in range(rng.randint(0, 8)))


def random_json(rng: random.Random, depth: int = 0):
    """A random JSON value: literals, exact integers, doubles across the exponent range, awkward strings, nesting."""
    kind = rng.randrange(6 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(-(2**53), 2**53)
    if kind == 2:
        return rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 10.0 ** rng.randint(-320, 300), -0.0, 0.1])
    if kind == 3:
        return random_string(rng)
    if kind == 4:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_string(rng): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_round_trip_idempotence_and_key_order_independence():
    rng = random.Random(10)
    for _ in range(1_000):
        value = random_json(rng)
        encoded = canonical_bytes(value)
        decoded = loads(encoded)
        assert decoded == value
        assert canonical_bytes(decoded) == encoded  # canonical form of the canonical form is itself
        assert canonical_bytes(shuffle_keys(value, rng)) == encoded
        # another spelling of the same JSON value (whitespace, key order, escapes) canonicalizes the same
        assert canonical_bytes(loads(json.dumps(value, indent=2, ensure_ascii=True))) == encoded


def shuffle_keys(value, rng: random.Random):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: shuffle_keys(item, rng) for key, item in items}
    if isinstance(value, list):
        return [shuffle_keys(item, rng) for item in value]
    return value


def test_distinct_values_encode_differently():
    assert canonical_bytes({"a": 1}) != canonical_bytes({"a": 2})
    assert canonical_bytes({"a": "1"}) != canonical_bytes({"a": 1})
    assert canonical_bytes([1, 2]) != canonical_bytes([2, 1])
    assert canonical_bytes(1) == canonical_bytes(1.0)  # one JSON number, one encoding


@pytest.mark.parametrize(("text", "expected"), [
    ("90024521857582180", 9.002452185758218e16),  # beyond 2**53: the double it denotes
    ("9007199254740992", 2**53), ("-12", -12), ("1E400", None), ("NaN", None), ("[Infinity]", None),
    ('{"a": 1, "a": 2}', None), ("1.5e3", 1500.0),
])
def test_loads_reads_numbers_as_jcs_does(text, expected):
    if expected is None:
        with pytest.raises(ValueError):
            loads(text)
    else:
        value = loads(text)
        assert value == expected and type(value) is type(expected)
        assert canonical_bytes(value) == canonical_bytes(expected)


def test_the_fast_number_path_lays_out_digits_as_the_general_one():
    """es_number's shortcut (repr's plain form) equals ECMA-262's general layout over the whole double range."""
    from privacy.federated.canonical import _es_layout, es_number

    rng = random.Random(1130)
    values = [rng.uniform(-1, 1) * 10.0 ** rng.randint(-8, 22) for _ in range(20_000)]
    values += [float(n) for n in range(-1000, 1000) if n] + [1e-4, 9.999999999999999e-5, 1e16, 9999999999999998.0,
                                                           1e21, 123456789012345680000.0, 0.1, -2.5, 5e-324]
    for value in values:
        assert es_number(value) == _es_layout(value), value


def test_float_arrays_take_the_same_layout_as_single_numbers():
    from privacy.federated.canonical import canonical_bytes, es_number

    rng = random.Random(30)
    plain = [rng.uniform(-1, 1) * 10.0 ** rng.randint(-4, 15) for _ in range(2000)] + [0.0, -0.0, 1.0, -10.0, 100.0]
    for values in (plain, plain + [1e-7], [-0.0], [-0.0, -10.0, 0.5], [3.0e21, 2.5]):
        expected = "[" + ",".join(es_number(v) for v in values) + "]"
        assert canonical_bytes(values) == expected.encode(), values[-3:]
    for bad in (float("nan"), float("inf")):
        with pytest.raises(CanonicalizationError):
            canonical_bytes([1.0, bad])
