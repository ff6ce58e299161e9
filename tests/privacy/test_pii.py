"""PII stripping (privacy/pii.py): detection on a labelled corpus, pseudonyms, the RedactionLog, the re-scan.

The corpus lives in ``tests/privacy/pii_corpus/``: ``positives.jsonl`` has one
``{"text", "category", "value"}`` per line, ``value`` being the exact substring that
must be redacted; ``negatives.jsonl`` has one ``{"text"}`` per line, hard cases on
which nothing may be found (decorators, versions, hashes, UUIDs, dates, prose with
"@" and "/", public URLs, code). The corpus was written alongside the detector; a
second batch of hard negatives was added and run before any fix for it. Every key,
token and card number in it is a random fake. Pure: needs no database.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from privacy.pii import (
    BUILTIN_RULE_NAMES,
    PiiLeakDetected,
    PiiStripper,
    RedactionLog,
    canonical_content,
    looks_random,
    luhn_valid,
    shannon_entropy,
)

CORPUS = Path(__file__).parent / "pii_corpus"

pytestmark = pytest.mark.usefixtures("pii_engine")  # each test runs with the C engine, then the Python one
RECALL_TARGET = 0.99
CATEGORY_RECALL_FLOOR = 0.95  # no category may hide behind the others' average


def _load(name: str) -> list[dict]:
    with open(CORPUS / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


POSITIVES = _load("positives.jsonl")
NEGATIVES = _load("negatives.jsonl")


def _detected(item: dict) -> bool:
    """The value is covered by one finding of the labelled category and is gone from the output."""
    text, value = item["text"], item["value"]
    redacted, findings = PiiStripper().strip_text(text)
    start = text.index(value)
    end = start + len(value)
    covered = any(f.category == item["category"] and f.start <= start and f.end >= end for f in findings)
    return covered and value not in redacted


# --- the corpus -----------------------------------------------------------------------------------


def test_the_corpus_is_big_and_varied_enough():
    per_category = Counter(item["category"] for item in POSITIVES)
    assert set(per_category) >= {"path", "ip", "email", "phone", "credit_card", "secret", "env_var", "username"}
    assert min(per_category.values()) >= 20, per_category
    assert len(NEGATIVES) >= 150
    assert len({item["text"] for item in POSITIVES}) == len(POSITIVES)
    assert all(item["value"] in item["text"] for item in POSITIVES)


def test_recall_on_the_labelled_positives():
    totals, hits, missed = Counter(), Counter(), []
    for item in POSITIVES:
        totals[item["category"]] += 1
        if _detected(item):
            hits[item["category"]] += 1
        else:
            missed.append(f"{item['category']}: {item['text'][:120]!r}")
    per_category = {c: hits[c] / totals[c] for c in sorted(totals)}
    recall = sum(hits.values()) / sum(totals.values())
    report = "\n".join([f"recall {recall:.4f} (target {RECALL_TARGET})"]
                       + [f"  {c:12s} {hits[c]:3d}/{totals[c]:3d} = {r:.3f}" for c, r in per_category.items()]
                       + ["missed:"] + missed)
    assert recall >= RECALL_TARGET, report
    assert min(per_category.values()) >= CATEGORY_RECALL_FLOOR, report


def test_no_false_positive_on_the_hard_negatives():
    stripper = PiiStripper()
    false_alarms = []
    for item in NEGATIVES:
        for finding in stripper.scan(item["text"]):
            false_alarms.append(f"{finding.rule}: {item['text'][finding.start:finding.end]!r} in {item['text']!r}")
    assert false_alarms == [], f"{len(false_alarms)} false positive(s) on {len(NEGATIVES)} negatives:\n" + "\n".join(
        false_alarms)


def test_the_prefilter_hides_nothing():
    """The combined pre-filter only skips rules that cannot match: same findings as running every rule."""
    fast, slow = PiiStripper(), PiiStripper(prefilter=False)
    for text in [item["text"] for item in POSITIVES + NEGATIVES]:
        assert fast.scan(text) == slow.scan(text), text


@pytest.mark.parametrize("item", POSITIVES[::7], ids=lambda item: item["category"])
def test_stripped_positives_pass_the_servers_rescan(item):
    redacted, findings = PiiStripper().strip_text(item["text"])
    assert findings
    PiiStripper().assert_clean({"field": redacted})


# --- decisions the corpus states, spelled out -----------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("see https://docs.python.org/3/library/re.html", "see https://docs.python.org/3/library/re.html"),
    ("postgres://app:S3cr3t-P4ss@db.internal:5432/prod", "postgres://<REDACTED_KEY>@db.internal:5432/prod"),
    ("open file:///home/alice/notes.md", "open <PATH_1>"),
    ("GET http://203.0.113.57/admin", "GET http://<IP_1>/admin"),
    ("https://api.example.com/v1?api_key=9f8e7d6c5b4a39281706f5e4d3c2b1a0&q=1",
     "https://api.example.com/v1?api_key=<REDACTED_KEY>&q=1"),
])
def test_urls_keep_their_host_and_lose_credentials(text, expected):
    assert PiiStripper().strip_text(text)[0] == expected


@pytest.mark.parametrize("text, expected", [
    ("Authorization: Bearer abcDEF0123456789ghiJKL", "Authorization: Bearer <REDACTED_KEY>"),
    ("password=hunter2 and password: ********", "password=<REDACTED_KEY> and password: ********"),
    ("AKIAIOSFODNN7EXAMPLE", "<REDACTED_KEY>"),
    ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIabc\n-----END EC PRIVATE KEY-----\nafter", "<REDACTED_KEY>\nafter"),
])
def test_secrets_become_redacted_key(text, expected):
    assert PiiStripper().strip_text(text)[0] == expected


def test_code_at_signs_are_not_handles_but_mentions_are():
    code = "@property\ndef name(self):\n    return self._name\n\n@app.route('/x')\n@dataclass(frozen=True)\n"
    assert PiiStripper().scan(code) == []
    redacted, findings = PiiStripper().strip_text("thanks @alice_w, cc @bob-smith")
    assert redacted == "thanks <USER_1>, cc <USER_2>"
    assert [f.rule for f in findings] == ["handle", "handle"]


def test_findings_point_into_the_original_and_carry_no_original_value():
    text = "mail alice@example.com from 10.1.2.3"
    _, findings = PiiStripper().strip_text(text)
    assert [(text[f.start:f.end], f.replacement) for f in findings] == [
        ("alice@example.com", "<EMAIL_1>"), ("10.1.2.3", "<IP_1>")]
    assert all("alice" not in repr(f) for f in findings)


# --- pseudonyms -----------------------------------------------------------------------------------


def test_the_same_value_gets_the_same_pseudonym_within_one_export():
    fields = {
        "a": "read /home/alice/data.csv then /home/bob/x.csv",
        "b": "again /home/alice/data.csv from 192.168.1.20",
        "c": "Alice@Example.com wrote to alice@example.com",
        "d": "2001:db8::1 is 2001:0db8:0:0:0:0:0:1 and 192.168.1.20",
    }
    redacted, log = PiiStripper().strip_fields(fields)
    assert redacted == {
        "a": "read <PATH_1> then <PATH_2>",
        "b": "again <PATH_1> from <IP_1>",
        "c": "<EMAIL_1> wrote to <EMAIL_1>",
        "d": "<IP_2> is <IP_2> and <IP_1>",
    }
    assert log.counts == {"path": 3, "ip": 4, "email": 2}


def test_each_strip_fields_call_is_its_own_export():
    stripper = PiiStripper()
    first, _ = stripper.strip_fields(["from 10.9.8.7", "from 10.1.1.1"])
    second, _ = stripper.strip_fields(["from 10.1.1.1"])
    assert first == ["from <IP_1>", "from <IP_2>"]
    assert second == ["from <IP_1>"]  # no table carried over: exports cannot be linked by pseudonyms


def test_strip_text_shares_one_table_until_reset():
    stripper = PiiStripper()
    assert stripper.strip_text("a@example.com")[0] == "<EMAIL_1>"
    assert stripper.strip_text("b@example.com, a@example.com")[0] == "<EMAIL_2>, <EMAIL_1>"
    stripper.reset()
    assert stripper.strip_text("b@example.com")[0] == "<EMAIL_1>"


def test_secrets_keep_no_identity():
    redacted, _ = PiiStripper().strip_text("ghp_" + "A1" * 18 + " and ghp_" + "B2" * 18)
    assert redacted == "<REDACTED_KEY> and <REDACTED_KEY>"


# --- the RedactionLog -----------------------------------------------------------------------------


def test_the_log_hashes_the_content_before_redaction_canonically():
    fields = {"path": "/home/alice/projects/x.py", "note": 'clean "quoted" text, déjà vu', "ip": "10.0.0.17"}
    redacted, log = PiiStripper().strip_fields(fields)
    # computed independently: the stated canonical bytes, written out by hand
    canonical = ('[["path","/home/alice/projects/x.py"],["note","clean \\"quoted\\" text, déjà vu"],'
                 '["ip","10.0.0.17"]]').encode("utf-8")
    assert canonical_content(list(fields.items())) == canonical
    assert log.content_hash == hashlib.shake_256(canonical).hexdigest(32)
    assert len(log.content_hash) == 64
    assert isinstance(log, RedactionLog)
    assert log.counts == {"ip": 1, "path": 1} and log.total == 2
    assert log.rules_fired == ["ipv4", "unix_path"]
    assert log.field_count == 3
    assert redacted == {"path": "<PATH_1>", "note": fields["note"], "ip": "<IP_1>"}


def test_the_hash_commits_to_every_byte_and_to_the_order():
    base = [("a", "x"), ("b", "y")]
    digest = PiiStripper().strip_fields(base)[1].content_hash
    assert PiiStripper().strip_fields([("a", "x"), ("b", "z")])[1].content_hash != digest
    assert PiiStripper().strip_fields([("b", "y"), ("a", "x")])[1].content_hash != digest
    assert PiiStripper().strip_fields([("a", "xb"), ("", "y")])[1].content_hash != digest  # framing is unambiguous


def test_the_log_serializes_and_counts_each_redaction():
    _, log = PiiStripper().strip_fields({"x": "$HOME $HOME %APPDATA% token=9f8e7d6c5b4a39281706f5e4d3c2b1a0"})
    assert log.to_dict() == {
        "counts": {"env_var": 3, "secret": 1},
        "content_hash": log.content_hash,
        "rules_fired": ["env_var_unix", "env_var_windows", "generic_secret"],
        "field_count": 1,
        "hash_algorithm": "shake256-32",
        "canonicalization": "json-name-value-pairs-utf8",
    }


@pytest.mark.parametrize("fields, expected", [
    ({"k": "at 10.2.3.40"}, {"k": "at <IP_1>"}),
    ([("k", "at 10.2.3.40")], [("k", "at <IP_1>")]),
    (["at 10.2.3.40", "clean"], ["at <IP_1>", "clean"]),
])
def test_strip_fields_keeps_the_shape(fields, expected):
    assert PiiStripper().strip_fields(fields)[0] == expected


@pytest.mark.parametrize("fields", [{"k": 3}, [("k", None)], "a single string", [("a", "b", "c")]])
def test_strip_fields_refuses_what_is_not_string_fields(fields):
    with pytest.raises(TypeError):
        PiiStripper().strip_fields(fields)


# --- custom rules ---------------------------------------------------------------------------------


def test_add_rule_detects_redacts_and_attests():
    stripper = PiiStripper()
    stripper.add_rule("ticket", "ticket", r"\bCASE-\d{6}\b")
    redacted, log = stripper.strip_fields({"n": "see CASE-123456 and CASE-654321, again CASE-123456"})
    assert redacted == {"n": "see <TICKET_1> and <TICKET_2>, again <TICKET_1>"}
    assert log.counts == {"ticket": 3}
    assert log.rules_fired == ["ticket"]


def test_add_rule_with_a_value_group_and_the_secret_category():
    stripper = PiiStripper()
    stripper.add_rule("internal_pin", "secret", r"PIN (?P<v>\d{4})\b")
    assert stripper.strip_text("your PIN 4821 expires")[0] == "your PIN <REDACTED_KEY> expires"


def test_add_rule_refuses_bad_rules():
    stripper = PiiStripper()
    with pytest.raises(ValueError):
        stripper.add_rule("email", "email", r"x")  # a built-in's name
    with pytest.raises(ValueError):
        stripper.add_rule("empty", "thing", r"a*")  # matches the empty string
    with pytest.raises(ValueError):
        stripper.add_rule("nocat", "", r"a")
    assert "email" in BUILTIN_RULE_NAMES


# --- defence in depth -----------------------------------------------------------------------------


def test_a_rule_that_matches_a_pseudonym_makes_the_rescan_raise():
    stripper = PiiStripper()
    stripper.add_rule("angle_tokens", "tag", r"<[A-Z]+_\d+>")
    with pytest.raises(PiiLeakDetected) as raised:
        stripper.strip_fields({"note": "mail alice@example.com"})
    assert raised.value.rules == ("angle_tokens",)
    assert raised.value.field_name == "note"


def test_a_redaction_that_leaves_part_of_a_match_makes_the_rescan_raise():
    """A custom secret rule wins over the e-mail it overlaps; the e-mail's tail is still an e-mail."""
    stripper = PiiStripper()
    stripper.add_rule("legacy_login", "secret", r"login=\w{3}")
    with pytest.raises(PiiLeakDetected) as raised:
        stripper.strip_text("login=alice@example.com")  # -> "<REDACTED_KEY>ce@example.com"
    assert raised.value.rules == ("email",)
    assert "ce@" not in str(raised.value) and "example" not in str(raised.value)  # names the rule, not the value


def test_assert_clean_is_the_servers_check():
    stripper = PiiStripper()
    stripper.assert_clean({"a": "<PATH_1> and <REDACTED_KEY>", "b": "version 1.2.3"})
    with pytest.raises(PiiLeakDetected) as raised:
        stripper.assert_clean([("a", "fine"), ("b", "call +1 415-555-0132")])
    assert raised.value.field_name == "b" and "phone_international" in raised.value.rules


def test_stripping_is_idempotent_and_never_leaks_on_mixed_random_text():
    """Random mixtures of PII pieces and prose: the rescan never fires and a second pass finds nothing."""
    pieces = [item["value"] for item in POSITIVES] + [item["text"] for item in NEGATIVES] + [
        " ", "\n", "/", "@", ":", "=", "-", ".", ",", "(", ")", '"', "'", "\\", "$", "%", "~", "and", "x"]
    generator = random.Random(10)  # test data, not privacy noise
    stripper = PiiStripper()
    for _ in range(400):
        text = "".join(generator.choice(pieces) for _ in range(generator.randint(1, 8)))
        try:
            once, _ = stripper.strip_text(text)
        except PiiLeakDetected as leak:  # allowed only when overlapping matches left a residue
            assert leak.rules, text
            continue
        assert stripper.scan(once) == [], (text, once)


# --- untrusted input: the server re-scans what contributors send ----------------------------------

ADVERSARIAL_SIZE = 60_000
ADVERSARIAL = {  # shapes that made a rule or the overlap resolution quadratic before it was bounded
    "braced env defaults": "${A:-",
    "url userinfo": "a://b:",
    "obfuscated e-mail local part": "a-",
    "closing parentheses": ")",
    "handles": "@ab ",
    "dotted domain": "@a.",
    "key words": "token:",
    "path words": "/home/a b ",
    "hex colons": "ab:",
    "digits and dots": "1.1.1.",
    "dashes": "a-",
    "private key headers": "-----BEGIN PRIVATE KEY-----x",
}


@pytest.mark.parametrize("unit", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_stripping_time_is_linear_on_adversarial_input(unit):
    """60k characters in well under 1.5 s of CPU (linear takes ~0.1 s here; the quadratic versions took seconds)."""
    text = unit * (ADVERSARIAL_SIZE // len(unit))
    if unit == "a-":
        text += "[at]"  # wakes the obfuscated e-mail rule
    if unit == ")":
        text = "C:\\a" + text
    started = time.process_time()
    try:
        PiiStripper().strip_text(text)
    except PiiLeakDetected:
        pass  # the verdict does not matter here, the time does
    assert time.process_time() - started < 1.5


# --- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117",
                                    "79927398713", "0", "00"])
def test_luhn_accepts_valid_numbers(number):
    assert luhn_valid(number) is (number not in ("0",))  # one digit is too short to carry a check digit


def test_luhn_catches_every_single_digit_error_and_adjacent_transposition():
    valid = "4539578763621486"
    assert luhn_valid(valid)
    for i in range(len(valid)):
        for d in "0123456789":
            if d != valid[i]:
                assert not luhn_valid(valid[:i] + d + valid[i + 1:])
    for i in range(len(valid) - 1):
        a, b = valid[i], valid[i + 1]
        if a != b and {a, b} != {"0", "9"}:  # 09 <-> 90 is Luhn's one blind spot
            assert not luhn_valid(valid[:i] + b + a + valid[i + 2:])


@pytest.mark.parametrize("value", ["4111 1111 1111 1111", "4111-1111", "", "abc", "411111111111111a"])
def test_luhn_wants_bare_digits(value):
    assert not luhn_valid(value)


def test_entropy_and_randomness():
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)
    assert looks_random("9f8e7d6c5b4a39281706f5e4d3c2b1a0")
    assert looks_random("kX9mQ2vL7pR4tW8zN3bF6hJ1")
    assert not looks_random("bert-base-uncased-v2")
    assert not looks_random("prod-db-credentials")
    assert not looks_random("2024-01-15T10:30:00Z")
    assert not looks_random("aaaaaaaaaaaaaaaa1")
