"""The Hyperscan pre-filter of privacy/pii.py is conservative: it never skips a rule that would have matched.

For every string of the labelled corpus (positives and hard negatives) and for generated strings, each rule that
finds something when every rule runs (``PiiStripper(prefilter=False)``) must be in the plan the Hyperscan scan
gives, and the findings must be the same. Generated strings are random mixtures of the corpus values, their
pieces and the characters the rules hinge on, with a fixed seed (test data, not privacy noise).
"""

from __future__ import annotations

import json
import random
import string
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from privacy import pii
from privacy.pii import PiiStripper

CORPUS = Path(__file__).parent / "pii_corpus"

pytestmark = pytest.mark.usefixtures("pii_engine")  # each test runs with the C engine, then the Python one


def _texts(name: str) -> list[str]:
    with open(CORPUS / name, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


POSITIVES, NEGATIVES = _texts("positives.jsonl"), _texts("negatives.jsonl")
SLOW = PiiStripper(prefilter=False)


def _generated(count: int, seed: int) -> list[str]:
    generator = random.Random(seed)
    words = [w for text in POSITIVES + NEGATIVES for w in text.split()]
    pieces = words + list(string.punctuation) + [" ", "\n", "\t", "0", "7", "255", "1.2", "AKIA", "sk-", "ab:"]
    alphabet = string.ascii_letters + string.digits + string.punctuation + " "
    texts = []
    for _ in range(count):
        if generator.random() < 0.7:
            texts.append("".join(generator.choice(pieces) for _ in range(generator.randint(1, 10))))
        else:
            texts.append("".join(generator.choice(alphabet) for _ in range(generator.randint(1, 80))))
    return texts


def _assert_conservative(text: str) -> None:
    exact = {c.rule.name for c in SLOW._candidates(text)}
    if not text.isascii():
        return
    planned = {rule.name for _, rule in pii._BUILTIN_INDEX.hs_plan(pii._hs_triggers().matched(text))}
    assert exact <= planned, (text, exact - planned)


@pytest.mark.parametrize("texts", [POSITIVES, NEGATIVES], ids=["positives", "negatives"])
def test_the_hyperscan_plan_holds_every_rule_that_matches_the_corpus(texts):
    assert sum(text.isascii() for text in texts) > 0.9 * len(texts)
    for text in texts:
        _assert_conservative(text)


def test_the_hyperscan_plan_holds_every_rule_that_matches_generated_text():
    fast = PiiStripper()
    for text in _generated(3000, seed=20261130):
        _assert_conservative(text)
        assert fast.scan(text) == SLOW.scan(text), text


def test_most_clean_text_runs_no_rule_at_all():
    clean = "Loaded weights for the policy kernel after 1200 trajectories; mean reward 0.87, round 7"
    assert pii._BUILTIN_INDEX.hs_plan(pii._hs_triggers().matched(clean)) == []


def test_non_ascii_text_takes_the_python_prefilter_and_is_still_caught():
    text = "café: see /home/zoë/notes.txt or mail zoe.b@example.com from 10.1.2.33"
    assert {f.category for f in PiiStripper().scan(text)} == {"path", "email", "ip"}
    assert PiiStripper().scan(text) == SLOW.scan(text)


@pytest.mark.parametrize("text", [
    "mail bob [at> example [dot] com",  # the brackets of an obfuscated e-mail need not pair
    "ACCOUNTKEY=" + "A1b2" * 11,  # the Azure storage key rule is case-insensitive
    "accountKey=" + "A1b2" * 11,
])
def test_the_prefilter_keys_cover_every_spelling_the_pattern_matches(text):
    """Two holes the differential test of the C engine found: the pre-filter skipped a rule these texts match."""
    assert PiiStripper().scan(text) == SLOW.scan(text) != []


def test_custom_rules_always_run():
    stripper = PiiStripper()
    stripper.add_rule("ticket", "ticket", r"TCK-\d{6}")
    assert [f.replacement for f in stripper.scan("see TCK-123456")] == ["<TICKET_1>"]
    assert PiiStripper().scan("see TCK-123456") == []  # the shared built-in index is untouched


def test_threads_scanning_at_once_get_the_same_findings():
    """A thread that finds the database's scratch space busy scans with its own (long texts make overlaps likely)."""
    texts = [text + " " * 20_000 for text in POSITIVES[:40]]
    expected = [SLOW.scan(text) for text in texts]
    stripper = PiiStripper()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(stripper.scan, texts)) == expected


@pytest.mark.parametrize("text, starts", [
    ("host ١٩٢.١٦٨.١.٤٢ up", [5]),  # digits of another script are still read as an address
    ("at 10.0.0.255 and 255.255.255.0 and 255.255.0.7, 01.2.3.4 300.1.1.1 9.9.9.10 v 10.2.3.4", [3, 36, 68]),
    ("release 10.2.3.44", []), ("Chrome/120.0.0.1 x", []), ("build:10.1.1.1", []),
])
def test_ipv4_acceptance_reads_quads_as_ipaddress_does(text, starts):
    """The regex check of octets (<= 255, no leading zero) that replaced ipaddress keeps its decisions."""
    assert [f.start for f in PiiStripper().scan(text) if f.rule == "ipv4"] == starts


def test_without_hyperscan_every_text_takes_the_python_prefilter_with_the_same_findings(monkeypatch):
    """Where Hyperscan has no wheel (not x86-64 Linux), the module loads without it and finds the same."""
    texts = POSITIVES + NEGATIVES + _generated(500, seed=11)
    with_hyperscan = [[(c.start, c.end, c.rule.name) for c in PiiStripper()._candidates(t)] for t in texts]
    monkeypatch.setattr(pii, "hyperscan", None)
    without = [[(c.start, c.end, c.rule.name) for c in PiiStripper()._candidates(t)] for t in texts]
    assert [sorted(found) for found in without] == [sorted(found) for found in with_hyperscan]
    assert sum(map(len, without)) > len(POSITIVES)  # the comparison has findings to compare
