"""Wire (JSON) and storage (bytes) forms of LDP reports, and oracle construction."""

import dataclasses
import json

import numpy as np
import pytest

from privacy.ldp import PROTOCOLS, FrequencyOracle, PayloadError, make_oracle, olh_hash

K, EPSILON = 20, 2.0  # olh: g = 8; ss: omega = 2


def oracle(name):
    return make_oracle(name, K, EPSILON)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_wire_round_trip_through_json(name):
    ldp = oracle(name)
    reports = ldp.randomize(np.arange(500) % K)
    payloads = json.loads(json.dumps(ldp.to_wire(reports)))
    assert np.array_equal(np.array([ldp.parse_wire(item) for item in payloads]), reports)


def test_wire_shapes():
    assert oracle("krr").to_wire(np.array([3, 19])) == [3, 19]
    assert oracle("oue").to_wire(np.eye(K, dtype=np.uint8)[[2]]) == ["00100000000000000000"]
    assert oracle("olh").to_wire(np.array([[2**32 - 1, 7]])) == [[2**32 - 1, 7]]
    assert oracle("ss").to_wire(np.array([[4, 9]])) == [[4, 9]]


def test_parse_wire_gives_the_array_row():
    assert oracle("krr").parse_wire(19).item() == 19
    assert oracle("oue").parse_wire("0" * 19 + "1").tolist() == [0] * 19 + [1]
    assert oracle("olh").parse_wire([0, 7]).tolist() == [0, 7]
    assert oracle("ss").parse_wire([9, 4]).tolist() == [4, 9]  # sets are stored sorted


MALFORMED = [
    # krr: one int in [0, k)
    ("krr", True, "invalid_payload"),
    ("krr", 3.0, "invalid_payload"),
    ("krr", "3", "invalid_payload"),
    ("krr", None, "invalid_payload"),
    ("krr", [3], "invalid_payload"),
    ("krr", -1, "invalid_payload"),
    ("krr", K, "invalid_payload"),
    # oue: a string of exactly k '0'/'1' characters
    ("oue", "0" * (K - 1), "invalid_payload_length"),
    ("oue", "0" * (K + 1), "invalid_payload_length"),
    ("oue", "", "invalid_payload_length"),
    ("oue", "0" * (K - 1) + "2", "invalid_payload"),
    ("oue", "1" + " " + "0" * (K - 2), "invalid_payload"),
    ("oue", "0" * (K - 1) + "\uff11", "invalid_payload"),  # fullwidth digit one
    ("oue", [0] * K, "invalid_payload"),
    ("oue", 0, "invalid_payload"),
    ("oue", None, "invalid_payload"),
    # olh: [seed, y] with seed in [0, 2**32) and y in [0, g)
    ("olh", [1], "invalid_payload_length"),
    ("olh", [1, 2, 3], "invalid_payload_length"),
    ("olh", [], "invalid_payload_length"),
    ("olh", (1, 2), "invalid_payload"),
    ("olh", {"seed": 1, "y": 2}, "invalid_payload"),
    ("olh", "1,2", "invalid_payload"),
    ("olh", [True, 1], "invalid_payload"),
    ("olh", [1, False], "invalid_payload"),
    ("olh", [1.0, 1], "invalid_payload"),
    ("olh", [1, "1"], "invalid_payload"),
    ("olh", [-1, 0], "invalid_payload"),
    ("olh", [2**32, 0], "invalid_payload"),
    ("olh", [0, 8], "invalid_payload"),
    ("olh", [0, -1], "invalid_payload"),
    # ss: a list of omega distinct ints in [0, k)
    ("ss", [1], "invalid_payload_length"),
    ("ss", [1, 2, 3], "invalid_payload_length"),
    ("ss", [], "invalid_payload_length"),
    ("ss", [3, 3], "invalid_payload"),
    ("ss", [0, K], "invalid_payload"),
    ("ss", [-1, 2], "invalid_payload"),
    ("ss", [True, 2], "invalid_payload"),
    ("ss", [1.0, 2], "invalid_payload"),
    ("ss", [None, 2], "invalid_payload"),
    ("ss", (1, 2), "invalid_payload"),
    ("ss", "1,2", "invalid_payload"),
    ("ss", 1, "invalid_payload"),
]


@pytest.mark.parametrize("name, payload, code", MALFORMED)
def test_parse_wire_rejects_malformed_reports(name, payload, code):
    with pytest.raises(PayloadError) as raised:
        oracle(name).parse_wire(payload)
    assert raised.value.code == code
    assert isinstance(raised.value, ValueError) and raised.value.message


@pytest.mark.parametrize("name, size", [("krr", 2), ("oue", 3), ("olh", 8), ("ss", 4)])
def test_pack_round_trip(name, size):
    ldp = oracle(name)
    reports = ldp.randomize(np.arange(1000) % K)
    packed = ldp.pack(reports)
    assert len(packed) == 1000 and all(isinstance(item, bytes) and len(item) == size for item in packed)
    assert ldp.packed_size == size
    unpacked = ldp.unpack(packed)
    assert np.array_equal(unpacked, reports) and unpacked.dtype == reports.dtype


def test_pack_keeps_extreme_values():
    olh = oracle("olh")
    extreme = np.array([[2**32 - 1, olh.g - 1], [0, 0]])
    assert np.array_equal(olh.unpack(olh.pack(extreme)), extreme)
    krr = make_oracle("krr", 2**16, 1.0)
    assert np.array_equal(krr.unpack(krr.pack(np.array([2**16 - 1, 0]))), [2**16 - 1, 0])
    oue = make_oracle("oue", 9, 1.0)  # 9 bits: a padded second byte
    bits = np.ones((1, 9), dtype=np.uint8)
    assert np.array_equal(oue.unpack(oue.pack(bits)), bits)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_pack_of_nothing(name):
    ldp = oracle(name)
    assert ldp.pack(ldp.randomize(np.array([], dtype=np.int64))) == []
    assert len(ldp.unpack([])) == 0


@pytest.mark.parametrize("name", PROTOCOLS)
def test_unpack_rejects_wrong_sizes(name):
    ldp = oracle(name)
    packed = ldp.pack(ldp.randomize(np.array([1, 2])))
    for bad in ([packed[0] + b"\x00"], [packed[0][:-1]], [packed[0][:-1], packed[1] + b"\x00"]):
        with pytest.raises(PayloadError) as raised:
            ldp.unpack(bad)
        assert raised.value.code == "invalid_payload_length"


@pytest.mark.parametrize(
    "name, blob",
    [
        ("krr", b"\x00\x14"),  # 20
        ("olh", b"\x00\x00\x00\x01\x00\x00\x00\x08"),  # y = g
        ("ss", b"\x00\x05\x00\x05"),  # duplicate
        ("ss", b"\x00\x05\x00\x14"),  # 20
    ],
)
def test_unpack_rejects_values_out_of_range(name, blob):
    with pytest.raises(PayloadError) as raised:
        oracle(name).unpack([blob])
    assert raised.value.code == "invalid_payload"


@pytest.mark.parametrize(
    "name, reports",
    [
        ("krr", np.array([0, K])),
        ("krr", np.array([[0]])),
        ("oue", np.full((1, K), 2)),
        ("oue", np.zeros((1, K - 1))),
        ("olh", np.array([[0, 8]])),
        ("olh", np.array([0, 1])),
        ("ss", np.array([[5, 3]])),  # not in canonical (sorted) order
        ("ss", np.array([[0.0, 1.0]])),
    ],
)
def test_aggregation_rejects_malformed_arrays(name, reports):
    with pytest.raises(PayloadError):
        oracle(name).support_counts(reports)


def test_support_counts_by_hand():
    assert oracle("krr").support_counts(np.array([0, 0, 19])).tolist() == [2] + [0] * 18 + [1]
    bits = np.zeros((2, K), dtype=np.uint8)
    bits[:, 4] = 1
    bits[0, 5] = 1
    assert oracle("oue").support_counts(bits)[[4, 5, 6]].tolist() == [2, 1, 0]
    assert oracle("ss").support_counts(np.array([[1, 2], [2, 3]]))[:5].tolist() == [0, 1, 2, 1, 0]
    olh = oracle("olh")
    seed = 12345
    y = int(olh_hash(np.array([seed]), np.array([6]), olh.g)[0])
    expected = (olh_hash(np.full(K, seed), np.arange(K), olh.g) == y).astype(int)
    assert olh.support_counts(np.array([[seed, y]])).tolist() == expected.tolist()


def test_oracle_parameters():
    krr, oue, olh, ss = (oracle(name) for name in PROTOCOLS)
    assert [o.name for o in (krr, oue, olh, ss)] == list(PROTOCOLS)
    assert (krr.max_support, oue.max_support, olh.max_support, ss.max_support) == (1, K, K, 2)
    assert (oue.p, olh.g, olh.q, ss.omega) == (0.5, 8, 1 / 8, 2)
    assert all(isinstance(o, FrequencyOracle) and o.k == K and o.epsilon == EPSILON for o in (krr, oue, olh, ss))


def test_oracles_are_immutable():
    ldp = oracle("krr")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ldp.epsilon = 10.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        ldp.k = 2


@pytest.mark.parametrize(
    "k, epsilon",
    [
        (1, 1.0),
        (True, 1.0),
        (2.0, 1.0),
        (2**16 + 1, 1.0),
        (20, 0.0),
        (20, -1.0),
        (20, float("inf")),
        (20, float("nan")),
        (20, 21.0),
    ],
)
def test_invalid_parameters_are_rejected(k, epsilon):
    for name in PROTOCOLS:
        with pytest.raises(ValueError):
            make_oracle(name, k, epsilon)


def test_unknown_protocol_is_rejected():
    with pytest.raises(ValueError):
        make_oracle("rappor", K, EPSILON)


def test_defaults_are_the_service_constants():
    assert (make_oracle("krr").k, make_oracle("krr").epsilon) == (20, 2.0)
