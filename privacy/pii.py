"""PII stripping for federated exports: detect, redact with pseudonyms, attest.

Every string field of an export passes through :class:`PiiStripper` before it
leaves the contributor's machine (issue 10, spec "PII Stripping Pipeline"):

1. **Detect.** Built-in rules (:data:`BUILTIN_RULE_NAMES`) for file paths,
   IP and MAC addresses, e-mail addresses, phone numbers, payment cards (Luhn),
   US social security numbers, IBANs (mod 97), secrets (provider key formats in
   the manner of gitleaks, JWTs, PEM private keys, Bearer/Basic credentials,
   credentials in URLs, and high-entropy values after a key-like word),
   environment variable references and @handles; plus the caller's own rules
   (:meth:`PiiStripper.add_rule`).
2. **Redact.** Each detected value becomes a pseudonym, ``<PATH_1>``,
   ``<IP_2>``, ``<EMAIL_1>``..., the same original always mapping to the same
   pseudonym within one export, so that structure survives; secrets become
   ``<REDACTED_KEY>`` and keep no identity at all.
3. **Attest.** :meth:`PiiStripper.strip_fields` returns a :class:`RedactionLog`:
   counts by category, the rules that fired, and the SHAKE-256 hash of the
   content before redaction (:func:`canonical_content` states the encoding).

After redaction the output is scanned again with every rule; any hit raises
:class:`PiiLeakDetected` (defence in depth). The same check serves the server,
which re-scans every string it receives (:meth:`PiiStripper.assert_clean`).

Decisions, each visible in the rules below:

* A URL's host name is not PII, and neither is its path (``https://docs.python.org/3/``
  is left alone). Credentials in a URL (``scheme://user:password@host``) are a
  secret, an IP address as host is an IP, a ``file://`` URL is a path, and a
  key-like query parameter (``?api_key=...``) is a secret.
* Every absolute filesystem path under a well-known root (``/home``, ``/root``,
  ``/srv``, ``/Users``, ``/var``, ...), every ``~`` path, every drive-letter
  and UNC path is pseudonymized, personal or not: which paths name a person
  cannot be told reliably. Relative paths (``src/main.py``) and API routes
  (``/api/v1/...``) are not paths on this machine and are left alone.
* IPv4 addresses whose four octets are all single digits (``1.2.3.4``,
  ``8.8.8.8``) and netmasks are taken for version numbers / public resolvers /
  masks, as is a dotted quad right after "version", "release" or "build".
* ``@name`` is a handle unless it is code: a known decorator, annotation, doc
  tag or CSS at-rule (:data:`CODE_AT_WORDS`), a call (``@foo(``), a dotted
  name (``@app.route``), a scoped package (``@types/node``), inside backticks,
  or a decorator line followed by a definition.
* A generic secret needs a key-like word *ending* the key (``db_password``,
  ``GITHUB_TOKEN``, ``x-api-key``; not ``max_tokens`` or ``token_endpoint``).
  Password-like keys take any non-placeholder quoted value, and an unquoted
  one with a digit, a symbol or mixed case; other keys need a random-looking
  value (:func:`looks_random`: Shannon entropy >= 3 bits/char and a long
  segment mixing letters with digits or cases).

Performance: two engines find the same thing. The C engine (``privacy/_pii_native.c``, compiled at
install where a compiler is found) implements exactly, for ASCII text, the built-in rules that ordinary
text hits: file_url, unc_path, windows_path, unix_path, email, handle, ipv4, ipv6, mac_address, the three
phone rules, us_ssn, credit_card, iban and the four environment-variable rules, with overlap resolution,
pseudonyms and the result objects, in one pass (~0.5 µs for a log line with three findings). It declines a
text, which then takes the Python engine below, when the text is not ASCII, when a stripper has custom
rules, or when one of the other rules (secrets, url_credentials, email_obfuscated) could match: their
pre-filter keys decide that, as below (for url_credentials, its pattern); and when an IPv6 candidate has an
IPv4 tail or is IPv4-mapped (``ipaddress`` reads those differently across Python versions). Declining never
loses a finding;
``tests/privacy/test_pii_native.py`` compares both engines on the corpus and on generated text, and
``PiiStripper(native=False)`` forces the Python engine.

The Python engine is the reference: every regex is compiled once, and patterns start with their rare
anchor ("@", "/", "$", a provider prefix) so that the regex engine skips ahead in C.
A pre-filter tells which rules can match a string at all, from each rule's necessary conditions: a character
or literal it needs, one gate (a run of 16 token characters) in front of the ~40 provider-key rules, and a
small "quick" regex per number rule. For an ASCII string all of them are checked in one Hyperscan scan
(:class:`_HyperscanTriggers`); other strings take the pure-Python checks (:meth:`PiiStripper._present`).
``PiiStripper(prefilter=False)`` runs every rule of the Python engine, for the tests that prove the
pre-filter hides nothing (``tests/privacy/test_pii.py``, ``tests/privacy/test_pii_prefilter.py``).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import hashlib
import ipaddress
import json
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence, Union

try:  # bundled wheels for x86-64 Linux only: elsewhere every text takes the Python pre-filter
    import hyperscan
except ImportError:  # pragma: no cover - exercised by tests that hide the module
    hyperscan = None

try:  # the C engine (privacy/_pii_native.c), compiled at install where a compiler is found
    from privacy import _pii_native
except ImportError:  # pragma: no cover - exercised by tests that hide the module
    _pii_native = None

__all__ = [
    "BUILTIN_RULE_NAMES",
    "CODE_AT_WORDS",
    "PiiFinding",
    "PiiLeakDetected",
    "PiiRule",
    "PiiStripper",
    "RedactionLog",
    "SECRET_CATEGORY",
    "canonical_content",
    "content_hash",
    "looks_random",
    "luhn_valid",
    "shannon_entropy",
]

SECRET_CATEGORY = "secret"
REDACTED_KEY = "<REDACTED_KEY>"
HASH_BYTES = 32

# Pseudonym label per built-in category; a custom category gets its name upper-cased.
_LABELS = {
    "path": "PATH", "ip": "IP", "mac": "MAC", "email": "EMAIL", "phone": "PHONE", "credit_card": "CARD",
    "national_id": "ID", "iban": "IBAN", "env_var": "ENV", "username": "USER",
}

Span = tuple[int, int]
Accept = Callable[[re.Match, str], Union[Span, None]]


class PiiLeakDetected(Exception):
    """PII still found after stripping (spec error variant ``PiiLeakDetected``).

    Carries the rule names and the field, never the matched text.
    """

    def __init__(self, rules: Sequence[str], field_name: str | None = None):
        self.rules = tuple(sorted(set(rules)))
        self.field_name = field_name
        where = f" in field {field_name!r}" if field_name is not None else ""
        super().__init__(f"PII found after stripping{where}: rule(s) {', '.join(self.rules)}")


@dataclass(frozen=True)
class PiiRule:
    """One detection rule. ``accept`` turns a match into the span to redact, or None to reject it."""

    name: str
    category: str
    pattern: re.Pattern
    accept: Accept | None = None
    triggers: tuple[str, ...] | None = None  # pre-filter keys, any of which must be present; None: always run
    quick: re.Pattern | None = None  # a cheap necessary condition, searched before ``pattern``
    requires: str | None = None  # a gate key that must be present too ("TOKEN" for provider keys)

    @property
    def is_secret(self) -> bool:
        return self.category == SECRET_CATEGORY

    def spans(self, text: str) -> Iterable[Span]:
        for match in self.pattern.finditer(text):
            span = self.accept(match, text) if self.accept else _value_span(match)
            if span and span[1] > span[0]:
                yield span


class PiiFinding(NamedTuple):
    """One redaction: where it was in the original text and what replaced it (never the original)."""

    rule: str
    category: str
    start: int
    end: int
    replacement: str


@dataclass
class RedactionLog:
    """Attestation of one stripping pass (spec segment 0x35, RedactionLog).

    ``content_hash`` is SHAKE-256 with a 32-byte output, hex, over
    :func:`canonical_content` of the fields before redaction.
    """

    counts: dict[str, int]
    content_hash: str
    rules_fired: list[str]
    field_count: int
    hash_algorithm: str = "shake256-32"
    canonicalization: str = "json-name-value-pairs-utf8"

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {
            "counts": dict(sorted(self.counts.items())),
            "content_hash": self.content_hash,
            "rules_fired": list(self.rules_fired),
            "field_count": self.field_count,
            "hash_algorithm": self.hash_algorithm,
            "canonicalization": self.canonicalization,
        }


# --- small pure helpers ---------------------------------------------------------------------------


def luhn_valid(number: str) -> bool:
    """The Luhn (mod 10) check of a digit string; separators must be removed first."""
    if not number.isdigit() or len(number) < 2:
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def shannon_entropy(value: str) -> float:
    """Shannon entropy of the characters of ``value``, in bits per character."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


_SEGMENT_SPLIT = re.compile(r"[-_.:/+=~]+")


def looks_random(value: str, *, min_length: int = 12, min_entropy: float = 3.0) -> bool:
    """True for a machine-made secret, False for words, names, numbers and identifiers.

    Long enough, entropy at least ``min_entropy`` bits/char, and one separator-free
    segment of 8+ characters mixing letters with digits, or of 16+ mixing cases.
    """
    if len(value) < min_length or shannon_entropy(value) < min_entropy:
        return False
    for segment in _SEGMENT_SPLIT.split(value):
        if len(segment) < 8:
            continue
        has_digit = any(c.isdigit() for c in segment)
        has_alpha = any(c.isalpha() for c in segment)
        if has_digit and has_alpha:
            return True
        if len(segment) >= 16 and any(c.isupper() for c in segment) and any(c.islower() for c in segment):
            return True
    return False


def canonical_content(pairs: Sequence[tuple[str, str]]) -> bytes:
    """The bytes the pre-redaction hash covers: the fields as ``[[name, value], ...]`` in the order given.

    JSON with no whitespace, non-ASCII characters written as themselves, UTF-8: for
    arrays of strings this is exactly RFC 8785 (JCS). Lone surrogates, which JSON text
    may carry, are encoded with ``surrogatepass`` instead of failing.
    """
    text = json.dumps([[name, value] for name, value in pairs], ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


def content_hash(pairs: Sequence[tuple[str, str]]) -> str:
    return hashlib.shake_256(canonical_content(pairs)).hexdigest(HASH_BYTES)


def _value_span(match: re.Match) -> Span:
    """The named group ``v`` when the pattern has one and it took part, else the whole match."""
    if "v" in match.re.groupindex and match.start("v") >= 0:
        return match.span("v")
    return match.span()


def _trim_trailing(text: str, start: int, end: int, chars: str = ".,:;!?'\"") -> Span:
    while end > start and text[end - 1] in chars:
        end -= 1
    # a closing parenthesis that the path did not open belongs to the prose around it
    opened, closed = text.count("(", start, end), text.count(")", start, end)
    while end > start and text[end - 1] == ")" and opened < closed:
        end -= 1
        closed -= 1
    return start, end


# --- paths ----------------------------------------------------------------------------------------

_UNIX_ROOTS = (
    "home|root|srv|Users|usr|var|etc|tmp|opt|mnt|media|data|proc|sys|dev|run|lib|lib32|lib64|bin|sbin|boot|"
    "snap|nix|private|Volumes|Applications|Library|System|workspace|workspaces|builds|scratch|gpfs|afs|nfs|"
    "net|export|storage|app|cygdrive|lustre"
)
_SEG = r"(?:[^\s/\\\"'`<>|;,:()\[\]{}*?]|\\ )"  # one path character; an escaped space is allowed
_END = r"(?=[\s\"'`)\],;:!?]|\.(?:\s|$)|$)"
# a segment: spaces inside only if a separator follows, or in a file name ending in an extension
_SEGS = rf"(?:[^\s/\\\"'`<>|;,:()\[\]{{}}*?.]+(?:\ [^\s/\"'`<>|;,:()\[\]{{}}*?.]+){{0,3}}\.[A-Za-z0-9]{{1,5}}{_END}" \
        rf"|{_SEG}+(?:\ {_SEG}+)*(?=/)|{_SEG}+)"
_NOT_BEFORE_PATH = r"[\w.:/\\~\]\[@$%-]"  # inside a word, a URL, a relative path
_UNIX_PATH = re.compile(
    rf"/(?<!{_NOT_BEFORE_PATH}/)(?:{_UNIX_ROOTS})(?:/+{_SEGS})+/?"
    rf"|~(?<!{_NOT_BEFORE_PATH}~)[A-Za-z0-9_.-]*(?:/+{_SEGS})+/?"
)
_WSEG = r"(?:[^\s\\/:*?\"<>|,;'`\[\]{}])"
_WSEGS = rf"(?:[^\s\\/:*?\"<>|,;'`\[\]{{}}.]+(?:\ [^\s\\/:*?\"<>|,;'`\[\]{{}}.]+){{0,3}}\.[A-Za-z0-9]{{1,5}}{_END}" \
         rf"|{_WSEG}+(?:\ {_WSEG}+)*(?=[\\/])|{_WSEG}+)"
_WINDOWS_PATH = re.compile(rf"(?<![\w/\\])[A-Za-z]:[\\/]+{_WSEGS}(?:[\\/]+{_WSEGS})*[\\/]*")
_UNC_PATH = re.compile(rf"(?<![\w\\])\\{{2,4}}(?:[?.]\\+)?[A-Za-z0-9_.$-]+(?:\\+{_WSEGS})+\\*")
_FILE_URL = re.compile(r"(?i)(?<![\w])file://[^\s\"'<>`]+")


def _accept_path(match: re.Match, text: str) -> Span:
    return _trim_trailing(text, *match.span())


# --- network addresses ----------------------------------------------------------------------------

_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w]|\.\d)")
_VERSION_BEFORE = re.compile(
    r"(?i)(?:(?:\bversion|\bver\.?|\brelease|\bbuild|\brev\.?|\bv)\s*[:=]?\s*|\b[A-Za-z][\w-]*/)$"
)  # "version 1.2.3.4", "Chrome/120.0.0.0"


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_VALID_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")  # ipaddress's reading: <= 255, no leading 0


def _accept_ipv4(match: re.Match, text: str) -> Span | None:
    quad = match.group()
    if not quad.isascii():  # digits of another script: int() reads them, as ipaddress would after conversion
        parts = quad.split(".")
        if any(len(part) > 1 and part[0] == "0" for part in parts) or max(map(int, parts)) > 255:
            return None
        quad = ".".join(str(int(part)) for part in parts)
    elif _VALID_QUAD.fullmatch(quad) is None:
        return None
    if len(quad) == 7 or quad.startswith("127."):  # 1.2.3.4, 8.8.8.8, 0.0.0.0: versions, nobody; loopback
        return None
    if quad.startswith("255."):
        as_int = int.from_bytes(bytes(int(part) for part in quad.split(".")), "big")
        if (as_int | (as_int - 1)) & 0xFFFFFFFF == 0xFFFFFFFF:  # a netmask
            return None
    start = match.start()
    window = text[max(0, start - 16):start].lower()
    # every match of _VERSION_BEFORE holds one of these: a cheap necessary test first
    if ("v" in window or "release" in window or "build" in window or "/" in window) and _VERSION_BEFORE.search(
            text, max(0, start - 16), start):
        return None
    return match.span()


_IPV6 = re.compile(
    r"(?<![\w:.%])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?:%[0-9A-Za-z_.-]+)?"
)


def _accept_ipv6(match: re.Match, text: str) -> Span | None:
    start, end = match.span()
    if end < len(text) and (text[end].isalnum() or text[end] == "_"):
        return None
    candidate = text[start:end]
    while candidate:
        if any(c.isdigit() for c in candidate.split("%")[0]) and len(candidate) >= 3:
            try:
                address = ipaddress.IPv6Address(candidate)
            except ValueError:
                pass
            else:
                if address.is_loopback or address.is_unspecified:
                    return None
                return start, start + len(candidate)
        if not candidate.endswith(":"):
            return None
        candidate = candidate[:-1]
    return None


_MAC = re.compile(
    r"(?<![\w:.-])(?:[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![\w:-]|\.\w)"
)


# --- contact data and identifiers -----------------------------------------------------------------

# "@domain.tld"; the local part is found backwards from the "@" (a regex starting at "@" is fast)
_EMAIL = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")
_LOCAL_PART_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_IMAGE_SCALE = re.compile(r"@\d+(?:\.\d+)?x\.")


def _accept_email(match: re.Match, text: str) -> Span | None:
    """The longest local part before the "@": up to 64 characters, starting with a letter or digit."""
    at = start = match.start()
    while start > 0 and at - start < 64 and text[start - 1] in _LOCAL_PART_CHARS:
        start -= 1
    if start == at or text[start] in "._%+-":
        return None
    if start > 0 and (text[start - 1] in _LOCAL_PART_CHARS or text[start - 1].isalnum() or text[start - 1] == "_"):
        return None  # a local part longer than 64 characters, or glued to a non-ASCII word
    if _IMAGE_SCALE.match(text, at) or text[start:at] == "git":  # icon@2x.png; git@github.com, the forges' SSH user
        return None
    return start, match.end()


_EMAIL_OBFUSCATED = re.compile(
    r"(?i)(?<![\w.])[a-z0-9][a-z0-9._%+-]{0,63}\s*[\[(<{]at[\])>}]\s*[a-z0-9-]+"
    r"(?:\s*[\[(<{]dot[\])>}]\s*[a-z0-9-]+|\.[a-z0-9-]+)+"
)

# +CC then groups split by a space or dash (a dot only between short groups, so +3.14159265 is a number)
_PHONE_INTERNATIONAL = re.compile(
    r"(?<![\w+])\+(?:\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ -]\d{1,8}|\.\d{1,4}){1,6}|\d{8,15})(?![\w]|[.-]\d)"
)
_PHONE_NANP = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}(?![\w]|[.-]\d)"
)
_PHONE_NATIONAL = re.compile(
    r"(?<![\w+.-])(?:0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}|0\d(?:[ .]\d{2}){4})(?![\w]|[.-]\d)"
)


def _accept_phone(match: re.Match, text: str) -> Span | None:
    digits = sum(c.isdigit() for c in match.group())
    return match.span() if 7 <= digits <= 15 else None


_CARD = re.compile(
    r"(?<![\w.-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{1,7}|\d{4}[ -]?\d{6}[ -]?\d{4,5}|\d{13,19})(?![\w]|[.-]\d)"
)
_CARD_IIN = re.compile(
    r"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|6(?:011|5|4[4-9]|2)|35(?:2[89]|[3-8])"
    r"|3(?:0[0-5]|[689])|5018|5020|5038|5893|6304|6759|676[1-3]"
)


def _accept_card(match: re.Match, text: str) -> Span | None:
    digits = re.sub(r"[ -]", "", match.group())
    if 13 <= len(digits) <= 19 and _CARD_IIN.match(digits) and luhn_valid(digits):
        return match.span()
    return None


_US_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")

# ISO 13616 lengths of the IBAN countries an export is likeliest to meet.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28,
    "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GI": 23,
    "GL": 18, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20,
    "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "ME": 22, "MK": 19, "MT": 31, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29,
}
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w])")


def _accept_iban(match: re.Match, text: str) -> Span | None:
    compact = match.group().replace(" ", "")
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return None
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return match.span() if int(number) % 97 == 1 else None


# --- secrets --------------------------------------------------------------------------------------

# (name, pattern, literal triggers): provider formats after gitleaks' default rules.
_PROVIDER_SECRETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("aws_access_key_id", r"(?<![A-Za-z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
     ("AKIA", "ASIA", "ABIA", "ACCA", "A3T")),
    ("github_token", r"(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9])",
     ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    ("github_fine_grained_pat", r"(?<![A-Za-z0-9])github_pat_[A-Za-z0-9_]{22,255}", ("github_pat_",)),
    ("gitlab_token", r"(?<![A-Za-z0-9])gl(?:pat|dt|rt|ptt|cbt|oas|ft|imt|soat)-[A-Za-z0-9_-]{20,}",
     ("glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "gloas-", "glft-", "glimt-", "glsoat-")),
    ("anthropic_api_key", r"(?<![A-Za-z0-9])sk-ant-[A-Za-z0-9]{2,12}-[A-Za-z0-9_-]{20,}", ("sk-",)),
    ("openai_api_key", r"(?<![A-Za-z0-9])sk-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,}"
     r"|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{32,})(?![A-Za-z0-9])", ("sk-",)),
    ("slack_token", r"(?<![A-Za-z0-9])xox[abposre]-(?:[0-9]+-)*[A-Za-z0-9-]{20,}", ("xox",)),
    ("slack_app_token", r"(?<![A-Za-z0-9])xapp-\d-[A-Z0-9]{8,}-\d{8,}-[a-z0-9]{16,}", ("xapp-",)),
    ("slack_webhook", r"https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}",
     ("hooks.slack.com",)),
    ("stripe_key", r"(?<![A-Za-z0-9])(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,247}(?![A-Za-z0-9])",
     ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_", "pk_test_")),
    ("stripe_webhook_secret", r"(?<![A-Za-z0-9])whsec_[A-Za-z0-9]{24,}", ("whsec_",)),
    ("google_api_key", r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])", ("AIza",)),
    ("google_oauth_token", r"(?<![A-Za-z0-9])ya29\.[0-9A-Za-z_-]{20,}", ("ya29.",)),
    ("google_oauth_client_secret", r"(?<![A-Za-z0-9])GOCSPX-[0-9A-Za-z_-]{28}", ("GOCSPX-",)),
    ("huggingface_token", r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{34,}(?![A-Za-z0-9])", ("hf_",)),
    ("npm_token", r"(?<![A-Za-z0-9])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])", ("npm_",)),
    ("pypi_token", r"(?<![A-Za-z0-9])pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", ("pypi-AgEIcHlwaS5vcmc",)),
    ("sendgrid_api_key", r"(?<![A-Za-z0-9])SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])", ("SG.",)),
    ("twilio_api_key", r"(?<![A-Za-z0-9])SK[0-9a-fA-F]{32}(?![A-Za-z0-9])", ("SK",)),
    ("mailgun_api_key", r"(?<![A-Za-z0-9])key-[0-9a-zA-Z]{32}(?![A-Za-z0-9])", ("key-",)),
    ("mailchimp_api_key", r"(?<![A-Za-z0-9])[0-9a-f]{32}-us\d{1,2}(?![A-Za-z0-9])", ("-us",)),
    ("digitalocean_token", r"(?<![A-Za-z0-9])do[opr]_v1_[a-f0-9]{64}(?![A-Za-z0-9])",
     ("doo_v1_", "dop_v1_", "dor_v1_")),
    ("shopify_token", r"(?<![A-Za-z0-9])shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}(?![A-Za-z0-9])", ("shp",)),
    ("databricks_token", r"(?<![A-Za-z0-9])dapi[a-f0-9]{32}(?:-\d)?(?![A-Za-z0-9])", ("dapi",)),
    ("hashicorp_vault_token", r"(?<![A-Za-z0-9])hv[sbr]\.[A-Za-z0-9_-]{24,}", ("hvs.", "hvb.", "hvr.")),
    ("doppler_token", r"(?<![A-Za-z0-9])dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}", ("dp.",)),
    ("postman_api_key", r"(?<![A-Za-z0-9])PMAK-[a-f0-9]{24}-[a-f0-9]{34}", ("PMAK-",)),
    ("grafana_token", r"(?<![A-Za-z0-9])(?:glc_[A-Za-z0-9+/]{32,}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})",
     ("glc_", "glsa_")),
    ("newrelic_key", r"(?<![A-Za-z0-9])NRAK-[A-Z0-9]{27}(?![A-Za-z0-9])", ("NRAK-",)),
    ("linear_api_key", r"(?<![A-Za-z0-9])lin_api_[A-Za-z0-9]{40}(?![A-Za-z0-9])", ("lin_api_",)),
    ("notion_token", r"(?<![A-Za-z0-9])(?:secret_[A-Za-z0-9]{43}|ntn_[A-Za-z0-9]{40,50})(?![A-Za-z0-9])",
     ("secret_", "ntn_")),
    ("square_token", r"(?<![A-Za-z0-9])(?:sq0(?:atp|csp)-[0-9A-Za-z_-]{22,43}|EAAA[0-9A-Za-z_-]{60})",
     ("sq0atp-", "sq0csp-", "EAAA")),
    ("telegram_bot_token", r"(?<![A-Za-z0-9])\d{8,10}:AA[0-9A-Za-z_-]{33}(?![A-Za-z0-9_-])", (":AA",)),
    ("age_secret_key", r"AGE-SECRET-KEY-1[0-9A-Z]{58}", ("AGE-SECRET-KEY-",)),
    ("azure_storage_key", r"(?i)AccountKey=(?P<v>[A-Za-z0-9+/]{40,}={0,2})", ("i:accountkey=",)),
    ("azure_sas_signature", r"[?&]sig=(?P<v>[A-Za-z0-9%+/]{30,}(?:%3D|=){0,2})", ("sig=",)),
    ("jwt", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", ("eyJ",)),
)
# Private keys: a whole block, or everything after a header whose end is missing (a truncated paste).
_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)"
)
_PUTTY_PRIVATE_KEY = re.compile(r"PuTTY-User-Key-File-\d:[\s\S]*?(?:Private-MAC: [0-9a-f]+|$)")
# Every match of a gated provider rule holds a run of 16 of these characters: the gate in front of them.
_LONG_TOKEN = re.compile(r"[A-Za-z0-9_-]{16}")
# Provider rules whose matches may lack such a run (dots, slashes, "+" or "%" inside): never gated.
_UNGATED_PROVIDERS = frozenset({"slack_webhook", "jwt", "grafana_token", "azure_storage_key", "azure_sas_signature"})

_BEARER = re.compile(r"(?i)(?<![A-Za-z0-9])bearer\s+(?P<v>[A-Za-z0-9._~+/-]{16,}=*)")
_BASIC = re.compile(r"(?i)(?<![A-Za-z0-9])basic\s+(?P<v>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")
_URL_CREDENTIALS = re.compile(r"://(?<=[A-Za-z0-9+.-]://)(?P<v>[^\s/?#@:\"'<>]+:[^\s/?#@\"'<>]*)@(?=[^\s/?#@\"'<>])")


def _accept_random(match: re.Match, text: str) -> Span | None:
    return match.span("v") if looks_random(match.group("v"), min_length=16) else None


def _accept_basic(match: re.Match, text: str) -> Span | None:
    value = match.group("v")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if b":" in decoded and decoded.isascii() and decoded.decode().isprintable():
        return match.span("v")
    return None


def _accept_url_credentials(match: re.Match, text: str) -> Span | None:
    password = match.group("v").partition(":")[2]
    return match.span("v") if password and not _is_placeholder(password) else None


# Key-like words a generic secret's key must end with. Password-like ones accept human passwords.
_SECRET_KEY_END = re.compile(
    r"(?i)(?:(?P<pw>password|passwd|passphrase|[a-z0-9][_-]pass|pass_?word)|secret|token|api[_-]?key|apikey|"
    r"(?:access|secret|private|auth|client|app|encryption|signing|master|license|account|service|session|"
    r"subscription|webhook)[_-]?key|credentials?|authorization|session[_-]?id|sessionid|cookie)$"
)
# key, separator, then the value inside a lookahead, so that a rejected match does not hide a key in its value
_VALUE = r"(?=\"(?P<dq>[^\"\n]{1,256})\"|'(?P<sq>[^'\n]{1,256})'|(?P<uq>[^\s\"'<>,;&)}\]]{1,256}))"
_GENERIC_SECRET = re.compile(
    r"(?<![\w.-])(?P<key>[A-Za-z_][\w.-]*)[\"']?[ \t]*(?::=|=>|==|[:=])[ \t]*" + _VALUE
)
_CLI_SECRET = re.compile(r"-(?<![\w-]-)-?(?P<key>[A-Za-z][\w-]*)(?:=|[ \t]+(?![-\s]))" + _VALUE)
_PLACEHOLDER = re.compile(
    r"(?i)^(?:\*+|x+|\.{2,}|-+|_+|\?+|#+|<[^>]*>|\[[^\]]*\]|\{[^}]*\}.*|\$\{?[\w.:-]*\}?|%\(?[\w]*\)?s?|"
    r"null|none|nil|undefined|true|false|empty|required|optional|string|str|bytes|text|secret|password|"
    r"token|redacted|changeme|change[_-]?me|example|placeholder|dummy|todo|tbd|n/?a|your[_-].*|my[_-].*|"
    r"env(?:iron)?\[.*|os\.environ.*|process\.env.*)$"
)
_DOTTED_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$|^[a-z]+(?:_[a-z]+)+$|^[A-Z]+(?:_[A-Z]+)+$")


def _is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value.strip()))


def _looks_like_code(value: str) -> bool:
    return any(c in value for c in "()[]{}$") or bool(_DOTTED_IDENTIFIER.match(value))


def _accept_generic_secret(match: re.Match, text: str) -> Span | None:
    key = _SECRET_KEY_END.search(match.group("key"))
    if key is None:
        return None
    group = next(name for name in ("dq", "sq", "uq") if match.start(name) >= 0)
    value = match.group(group)
    if _is_placeholder(value):
        return None
    quoted = group != "uq"
    if key.start("pw") >= 0:  # a password: humans choose them, entropy says little
        if len(value) < 4 or len(set(value)) < 2:
            return None
        if not quoted:
            if _looks_like_code(value) or len(value) < 6:
                return None
            mixed = any(c.isdigit() for c in value) or not value.isalnum() or (
                not value.islower() and not value.isupper())
            if not mixed:
                return None
        return match.span(group)
    if value.isdigit() or not looks_random(value):
        return None
    return match.span(group)


# --- environment variables and handles ------------------------------------------------------------

_ENV_BRACED = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]{0,127}(?:[:?+=-][^}\n]{0,256})?\}")
_ENV_UNIX = re.compile(r"\$(?<![\w$\\]\$)[A-Z_][A-Z0-9_]+(?![\w$])")
_ENV_WINDOWS = re.compile(r"%(?<![\w%]%)[A-Za-z_][A-Za-z0-9_]*(?:\([A-Za-z0-9]+\))?%(?![\w%])")
_ENV_POWERSHELL = re.compile(r"\$(?<![\w$]\$)(?i:env):[A-Za-z_][A-Za-z0-9_]*")


_WINDOWS_ENV_NAMES = frozenset("""
userprofile appdata localappdata programfiles programdata programw6432 commonprogramfiles systemroot systemdrive
windir temp tmp username userdomain computername homedrive homepath homeshare path pathext comspec public onedrive
allusersprofile logonserver psmodulepath processor_architecture number_of_processors os cd date time random
errorlevel cmdcmdline
""".split())


def _accept_env_windows(match: re.Match, text: str) -> Span | None:
    """Upper-case names and the known Windows variables; %Y% and '%smith%' are format codes and LIKE patterns."""
    name = match.group()[1:-1].split("(")[0]
    if len(name) >= 2 and (name.isupper() or name.lower() in _WINDOWS_ENV_NAMES):
        return match.span()
    return None


# Words after "@" that are not people: decorators and annotations (Python, Java/Kotlin, TypeScript, Swift),
# doc tags (JSDoc, Javadoc, Doxygen, epydoc), CSS and template at-rules, GraphQL directives, Perl arrays,
# Slack's group mentions, and "@home"-style prose. Compared case-insensitively.
CODE_AT_WORDS = frozenset("""
property staticmethod classmethod abstractmethod abstractproperty dataclass cached_property lru_cache cache cached
memoize wraps contextmanager asynccontextmanager overload override final total_ordering singledispatch
singledispatchmethod runtime_checkable unique fixture parametrize pytest mock patch skip skipif xfail app router
api bp blueprint receiver login_required permission_required permission_classes csrf_exempt require_http_methods
require_post require_get require_safe api_view action shared_task task periodic_task transaction atomic admin
register setter getter deleter validator root_validator field_validator model_validator field_serializer
model_serializer computed_field validates sync_to_async database_sync_to_async jit njit vectorize tf torch retry
click command group option argument typing functools abc deprecated no_type_check

test before after beforeeach aftereach beforeall afterall beforeclass afterclass parameterizedtest displayname
disabled tag nested timeout repeatedtest testfactory valuesource csvsource methodsource enumsource nullsource
emptysource runwith extendwith springboottest webmvctest datajpatest mockbean spy injectmocks rule
autowired component service repository controller restcontroller configuration bean value inject injectable
entity table column id generatedvalue onetomany manytoone manytomany onetoone joincolumn transactional lob
enumerated embedded embeddable mappedsuperclass version creationtimestamp updatetimestamp cacheable cacheevict
async scheduled enablescheduling profile primary qualifier lazy order eventlistener postconstruct predestroy
preauthorize secured rolesallowed webservlet path get post put delete patch produces consumes pathparam queryparam
context provider named singleton applicationscoped requestscoped generated documented retention target inherited
repeatable native keep uithread workerthread mainthread stringres drawableres intdef visiblefortesting callsuper
checkresult requiresapi targetapi suppresslint getmapping postmapping putmapping deletemapping patchmapping
requestmapping requestbody requestparam pathvariable responsebody responsestatus exceptionhandler crossorigin
springbootapplication enableautoconfiguration suppresswarnings functionalinterface safevarargs valid notblank
notempty size min max email pattern positive nullable nonnull notnull jsonproperty jsonignore
jsonignoreproperties jsoninclude data builder slf4j noargsconstructor allargsconstructor
requiredargsconstructor tostring equalsandhashcode jvmstatic jvmfield jvmoverloads jvmname throws composable
preview hiltviewmodel androidentrypoint serializable parcelize optin suppress

input output hostlistener hostbinding viewchild viewchildren contentchild ngmodule pipe directive module
useguards body query mutation resolver args objecttype inputtype prop watch emit

state published binding observedobject environmentobject stateobject environment mainactor objc nonobjc escaping
autoclosure available discardableresult iboutlet ibaction ibdesignable ibinspectable main observable bindable
uiapplicationmain nsapplicationmain propertywrapper resultbuilder dynamicmemberlookup frozen inlinable
usablefrominline testable sendable unchecked nsmanaged focusstate appstorage scenestorage model

param params return returns type typedef throws throw exception example see since author todo fixme
fileoverview exports export callback template private public protected internal link inheritdoc description
default enum memberof class constructor extends implements readonly summary license ts-ignore ts-expect-error
ts-nocheck ts-check jsx flow format noinspection brief file date struct fn var def ingroup defgroup addtogroup
code endcode li ref retval pre post warning bug details tparam copydoc note rtype ivar cvar raise raises keyword
kwarg attention sa

media import keyframes font-face supports charset page layer container apply tailwind extend include mixin use
forward if else each for function content namespace counter-style font-feature-values while debug warn error
at-root

interface end implementation synthesize dynamic selector autoreleasepool protocol optional required try catch
finally encode

foreach section yield endif endforeach endsection endforelse forelse unless endunless isset csrf using
skip include defer stream specifiedby oneof key external requires provides auth client

argv inc isa export_ok

echo here channel everyone all me team someone user username mention handle latest next beta canary
home work noon night lunch school office midnight
""".split())

_HANDLE = re.compile(
    r"@(?<![\w.@/\\`:+<-]@)(?P<name>[A-Za-z][A-Za-z0-9_-]{0,38}[A-Za-z0-9_]|[A-Za-z])(?![\w@/(`-]|\.[A-Za-z_])"
)
_DECORATOR_LINE = re.compile(r"[ \t]*@[\w.]+[ \t]*$")  # matched from the line start, up to its end
_DECORATOR_LINE_MAX = 256  # look no further for the ends of a decorator line: linear time on any input
_DEFINITION_START = re.compile(
    r"[ \t]*(?:async\s+)?(?:def|class|function|fun|func|public|private|protected|export|static|@)\b"
)


_CODE_AFTER = re.compile(r"[ \t]*(?:\|\|=|[-+*/]?=(?!=)|\[)")  # Ruby/Perl: @posts = ..., @ivar ||= ..., @a[0]


def _accept_handle(match: re.Match, text: str) -> Span | None:
    name = match.group("name")
    if len(name) < 2 or name.lower() in CODE_AT_WORDS or _CODE_AFTER.match(text, match.end()):
        return None
    # a decorator line: only "@name" on it (so short), and a definition on the next line
    line_start = text.rfind("\n", max(0, match.start() - _DECORATOR_LINE_MAX), match.start()) + 1
    line_end = text.find("\n", match.end(), match.end() + _DECORATOR_LINE_MAX)
    if (line_start or match.start() <= _DECORATOR_LINE_MAX) and line_end >= 0:
        if _DECORATOR_LINE.match(text, line_start, line_end) and _DEFINITION_START.match(text, line_end + 1):
            return None
    return match.span()


# --- the rule table -------------------------------------------------------------------------------

# Pre-filter: a rule runs only if one of its trigger keys is present in the text. A key is a character
# class below, "DIGIT", a literal, or "i:" and a literal looked for in the lower-cased text.
_CHAR_CLASSES = (("SLASH", "/"), ("SLASH", "\\"), ("TILDE", "~"), ("AT", "@"), ("DOLLAR", "$"), ("PERCENT", "%"),
                 ("COLON", ":"), ("EQUALS", "="), ("DASH", "-"), ("PLUS", "+"))
_CLASS_KEYS = frozenset(key for key, _ in _CHAR_CLASSES) | {"DIGIT"}
_ANY_DIGIT = re.compile(r"\d")
_MAX_PLANS = 4096  # distinct trigger-key sets remembered per stripper
_SECRET_WORDS = ("i:pass", "i:secret", "i:token", "i:key", "i:credential", "i:authorization", "i:session", "i:cookie")


def _rule(name: str, category: str, pattern: re.Pattern, accept: Accept | None = None, *,
          triggers: tuple[str, ...], quick: str | None = None, requires: str | None = None) -> PiiRule:
    return PiiRule(name, category, pattern, accept, triggers, re.compile(quick) if quick else None, requires)


def _builtin_rules() -> list[PiiRule]:
    secret, path = SECRET_CATEGORY, "path"
    rules = [
        _rule("url_credentials", secret, _URL_CREDENTIALS, _accept_url_credentials, triggers=("://",)),
        _rule("private_key_pem", secret, _PEM_PRIVATE_KEY, triggers=("-----BEGIN",)),
        _rule("putty_private_key", secret, _PUTTY_PRIVATE_KEY, triggers=("PuTTY-User-Key-File",)),
    ]
    rules += [_rule(name, secret, re.compile(pattern), triggers=literals,
                    requires=None if name in _UNGATED_PROVIDERS else "TOKEN")
              for name, pattern, literals in _PROVIDER_SECRETS]
    rules += [
        _rule("bearer_token", secret, _BEARER, _accept_random, triggers=("i:bearer",)),
        _rule("basic_auth", secret, _BASIC, _accept_basic, triggers=("i:basic",)),
        _rule("generic_secret", secret, _GENERIC_SECRET, _accept_generic_secret, triggers=_SECRET_WORDS,
              quick=r"[:=]"),
        _rule("cli_secret", secret, _CLI_SECRET, _accept_generic_secret, triggers=_SECRET_WORDS, quick=r"-[A-Za-z-]"),
        _rule("file_url", path, _FILE_URL, _accept_path, triggers=("i:file://",)),
        _rule("unc_path", path, _UNC_PATH, _accept_path, triggers=("SLASH",), quick=r"\\\\"),
        _rule("windows_path", path, _WINDOWS_PATH, _accept_path, triggers=("SLASH",), quick=r":[\\/]"),
        _rule("unix_path", path, _UNIX_PATH, _accept_path, triggers=("SLASH", "TILDE")),
        _rule("email", "email", _EMAIL, _accept_email, triggers=("AT",)),
        _rule("email_obfuscated", "email", _EMAIL_OBFUSCATED,  # brackets need not pair: "[at>" matches too
              triggers=tuple(f"i:{left}at{right}" for left in "[(<{" for right in "])>}")),
        _rule("credit_card", "credit_card", _CARD, _accept_card, triggers=("DIGIT",), quick=r"\d{4}[ -]?\d{4}"),
        _rule("iban", "iban", _IBAN, _accept_iban, triggers=("DIGIT",), quick=r"[A-Z]{2}\d\d"),
        _rule("us_ssn", "national_id", _US_SSN, triggers=("DASH",), quick=r"\d{3}-\d\d-\d{4}"),
        _rule("ipv4", "ip", _IPV4, _accept_ipv4, triggers=("DIGIT",), quick=r"\d\.\d{1,3}\.\d{1,3}\.\d"),
        _rule("ipv6", "ip", _IPV6, _accept_ipv6, triggers=("COLON",), quick=r":[0-9A-Fa-f]{0,4}:"),
        _rule("mac_address", "mac", _MAC, triggers=("COLON", "DASH", "DIGIT"),
              quick=r"[:-][0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-]|\.[0-9A-Fa-f]{4}\."),
        _rule("phone_international", "phone", _PHONE_INTERNATIONAL, _accept_phone, triggers=("PLUS",), quick=r"\+\d"),
        _rule("phone_nanp", "phone", _PHONE_NANP, _accept_phone, triggers=("DIGIT",), quick=r"\d{3}[ .-]\d{4}"),
        _rule("phone_national", "phone", _PHONE_NATIONAL, _accept_phone, triggers=("DIGIT",),
              quick=r"0\d{1,4}[ .-]\d\d"),
        _rule("env_var_braced", "env_var", _ENV_BRACED, triggers=("DOLLAR",)),
        _rule("env_var_powershell", "env_var", _ENV_POWERSHELL, triggers=("DOLLAR",)),
        _rule("env_var_unix", "env_var", _ENV_UNIX, triggers=("DOLLAR",)),
        _rule("env_var_windows", "env_var", _ENV_WINDOWS, _accept_env_windows, triggers=("PERCENT",)),
        _rule("handle", "username", _HANDLE, _accept_handle, triggers=("AT",)),
    ]
    return rules


BUILTIN_RULE_NAMES = tuple(rule.name for rule in _builtin_rules())  # also _BUILTIN_RULES, below


# --- the stripper ---------------------------------------------------------------------------------


class _Pseudonyms:
    """Original value -> pseudonym, stable for the life of one export."""

    def __init__(self):
        self._by_value: dict[tuple[str, str], str] = {}
        self._next: dict[str, int] = {}

    def get(self, category: str, value: str) -> str:
        if category == SECRET_CATEGORY:
            return REDACTED_KEY
        label = _LABELS.get(category) or re.sub(r"[^A-Z0-9]+", "_", category.upper()).strip("_") or "PII"
        key = (label, _normalize(category, value))
        pseudonym = self._by_value.get(key)
        if pseudonym is None:
            number = self._next[label] = self._next.get(label, 0) + 1
            pseudonym = self._by_value[key] = f"<{label}_{number}>"
        return pseudonym


def _first(pair: tuple) -> object:
    return pair[0]


def _start(cand: "_Candidate") -> int:
    return cand.start


def _precedence(cand: "_Candidate") -> tuple:
    return not cand.rule.is_secret, cand.start - cand.end, cand.order, cand.start


def _normalize(category: str, value: str) -> str:
    """One key per real-world value: case-folded e-mails, canonical IPs, bare digits of numbers."""
    if category == "email":
        return value.lower()
    if category == "ip" and ":" in value:  # an accepted IPv4 is already canonical (no leading zeros)
        try:
            return ipaddress.ip_address(value).compressed
        except ValueError:
            return value
    if category in ("phone", "credit_card", "iban", "national_id"):
        return "".join(c for c in value if c.isalnum()).upper()
    if category == "mac":
        return "".join(c for c in value if c.isalnum()).lower()
    return value


class _Candidate(NamedTuple):
    start: int
    end: int
    rule: PiiRule
    order: int


FieldsInput = Union[Mapping[str, str], Sequence[str], Sequence[tuple[str, str]]]


class _RuleIndex:
    """A rule list with what the pre-filters need: rules by trigger key, the literals to look for, memoized plans.

    The built-in list's index is built once per process (:data:`_BUILTIN_INDEX`) and shared by every stripper
    (building it costs ~150 µs, and a stripper is made per export); ``add_rule`` gives a stripper its own.
    """

    def __init__(self, rules: Sequence[PiiRule]):
        self.rules = tuple(rules)
        self.all = list(enumerate(self.rules))
        self.always = [(order, rule) for order, rule in self.all if rule.triggers is None]
        self.by_key: dict[str, list[tuple[int, PiiRule]]] = {}
        for order, rule in self.all:
            for key in rule.triggers or ():
                self.by_key.setdefault(key, []).append((order, rule))
        literals = {(rule.requires, key) for rule in self.rules for key in rule.triggers or ()
                    if key not in _CLASS_KEYS}
        self.lower_literals = sorted({key[2:].lower() for _, key in literals if key.startswith("i:")})
        self.plain_literals = sorted({key for gate, key in literals if gate is None and not key.startswith("i:")})
        self.gated_literals = sorted({key for gate, key in literals if gate and not key.startswith("i:")}
                                     - set(self.plain_literals))
        self.plans: dict[frozenset, list[tuple[int, PiiRule]]] = {}
        self.hs_plans: dict[frozenset, list[tuple[int, PiiRule]]] = {}

    def plan(self, present: frozenset) -> list[tuple[int, PiiRule]]:
        """The rules a text with these trigger keys needs, in rule order (their ``quick`` still to be checked);
        memoized per key set (keyed by the rules' int order, so no rule is hashed: a frozen dataclass hashes all
        its fields on every call)."""
        plan = self.plans.get(present)
        if plan is None:
            if len(self.plans) >= _MAX_PLANS:
                self.plans.clear()
            triggered = {order: rule for key in present for order, rule in self.by_key.get(key, ())}
            plan = self.plans[present] = sorted(triggered.items(), key=_first) + self.always
        return plan

    def hs_plan(self, matched: frozenset) -> list[tuple[int, PiiRule]]:
        """The rules whose every necessary condition is among the ``matched`` Hyperscan ids (quick included)."""
        plan = self.hs_plans.get(matched)
        if plan is None:
            if len(self.hs_plans) >= _MAX_PLANS:
                self.hs_plans.clear()
            plan = self.hs_plans[matched] = [
                (order, rule) for order, rule in self.all
                if rule.triggers is None or _hs_triggers().may_match(rule, matched)]
        return plan


class _HyperscanTriggers:
    """The pre-filter's keys, quick patterns and gate, as one Hyperscan database scanned once per ASCII text.

    Each trigger key (a character, a digit, a literal; "i:" ones caseless), each rule's ``quick`` pattern and the
    provider gate get an id; a scan reports the ids found anywhere in the text. A rule may match only if one of its
    keys, its quick pattern and its gate were all found: each is a necessary condition of the rule's exact
    pattern, already relied on by the pure-Python pre-filter. Only ASCII texts are scanned (``str.isascii``):
    there, Python's ``\\d``, ``[A-Z]`` and case folding mean what Hyperscan's do; other texts take the
    Python pre-filter. ``tests/privacy/test_pii_prefilter.py`` checks that nothing is hidden.
    """

    def __init__(self, rules: Sequence[PiiRule]):
        expressions: list[bytes] = []
        ids: list[int] = []
        flags: list[int] = []
        self.key_ids: dict[str, int] = {}
        self.quick_ids: dict[str, int] = {}

        def add(source: bytes, ident: int, caseless: bool = False) -> None:
            expressions.append(source)
            ids.append(ident)
            flags.append(hyperscan.HS_FLAG_SINGLEMATCH | (hyperscan.HS_FLAG_CASELESS if caseless else 0))

        for rule in rules:
            for key in rule.triggers or ():
                if key in self.key_ids:
                    continue
                ident = self.key_ids[key] = len(self.key_ids)
                if key == "DIGIT":
                    add(b"[0-9]", ident)
                elif key in _CLASS_KEYS:
                    for name, char in _CHAR_CLASSES:
                        if name == key:
                            add(_hs_literal(char), ident)
                elif key.startswith("i:"):
                    add(_hs_literal(key[2:]), ident, caseless=True)
                else:
                    add(_hs_literal(key), ident)
        next_id = len(self.key_ids)
        for rule in rules:
            if rule.quick is not None and rule.quick.pattern not in self.quick_ids:
                self.quick_ids[rule.quick.pattern] = next_id
                add(rule.quick.pattern.encode("ascii"), next_id)
                next_id += 1
        self.gate_id = next_id
        add(_LONG_TOKEN.pattern.encode("ascii"), self.gate_id)
        self.database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.database.compile(expressions=expressions, ids=ids, flags=flags)
        self._local = threading.local()
        self.conditions = {id(rule): (frozenset(self.key_ids[key] for key in rule.triggers),
                                      self.quick_ids[rule.quick.pattern] if rule.quick is not None else None,
                                      self.gate_id if rule.requires else None)
                           for rule in rules if rule.triggers is not None}

    def matched(self, text: str) -> frozenset:
        """The ids found in an ASCII ``text``.

        The database's own scratch space serves one scan at a time (the scan releases the GIL); a thread that finds
        it busy scans with a scratch space of its own, made once per thread.
        """
        found: list[int] = []
        data = text.encode("ascii")
        try:
            self.database.scan(data, match_event_handler=_collect, context=found)
        except hyperscan.ScratchInUseError:
            found.clear()
            scratch = getattr(self._local, "scratch", None)
            if scratch is None:
                scratch = self._local.scratch = hyperscan.Scratch(self.database)
            self.database.scan(data, match_event_handler=_collect, context=found, scratch=scratch)
        return frozenset(found)

    def may_match(self, rule: PiiRule, matched: frozenset) -> bool:
        keys, quick, gate = self.conditions[id(rule)]
        return (not keys.isdisjoint(matched) and (quick is None or quick in matched)
                and (gate is None or gate in matched))


def _collect(ident: int, start: int, end: int, flags: int, found: list) -> None:
    found.append(ident)


def _hs_literal(literal: str) -> bytes:
    return "".join(f"\\x{byte:02x}" for byte in literal.encode("ascii")).encode("ascii")


_BUILTIN_RULES = tuple(_builtin_rules())


@functools.cache
def _hs_triggers() -> _HyperscanTriggers:
    """The built-in rules' Hyperscan database, compiled on first use (~60 ms), not at import."""
    return _HyperscanTriggers(_BUILTIN_RULES)


_BUILTIN_INDEX = _RuleIndex(_BUILTIN_RULES)

# The quick patterns of the rules the C engine does not port, as it checks them (in front of the secret words).
_NATIVE_QUICK = {None: 0, "[:=]": 1, "-[A-Za-z-]": 2}


def _native_fingerprint(names: Iterable[str]) -> str:
    """SHA-256 of what privacy/_pii_native.c ports: the rules ``names`` and the patterns their accept functions use.

    ``names`` are the rules it implements (``RULES``) and those it only tells could match (``CHECKED``: a text where
    one could is declined).

    The C module carries the fingerprint of the patterns it was written from (``PORTED_SHA256``); a pattern changed
    here and not there turns the C engine off instead of letting the engines disagree.
    """
    names = set(names)
    parts = [f"{rule.name} {rule.category} {int(rule.pattern.flags)} {rule.pattern.pattern}"
             for rule in _BUILTIN_RULES if rule.name in names]
    parts += [pattern.pattern for pattern in (_VERSION_BEFORE, _VALID_QUAD, _IMAGE_SCALE, _CARD_IIN, _CODE_AFTER,
                                              _DECORATOR_LINE, _DEFINITION_START, _LONG_TOKEN)]
    parts += [str(_DECORATOR_LINE_MAX), "".join(sorted(_LOCAL_PART_CHARS))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _native_engine():
    """The C engine set up for the built-in rules, or None where it is not built or ports other patterns.

    The other rules are handed over as literals to decline on: their pre-filter keys (all of them literals),
    caseless for "i:" keys and case-insensitive patterns, gated by the 16-character token run where the rule
    ``requires`` it, with the rule's quick pattern.
    """
    if _pii_native is None or _pii_native.PORTED_SHA256 != _native_fingerprint(_pii_native.RULES
                                                                                + _pii_native.CHECKED):
        return None
    ported = set(_pii_native.RULES + _pii_native.CHECKED)
    decline = []
    for rule in _BUILTIN_RULES:
        if rule.name in ported:
            continue
        quick = rule.quick.pattern if rule.quick is not None else None
        if (rule.triggers is None or not _CLASS_KEYS.isdisjoint(rule.triggers) or quick not in _NATIVE_QUICK
                or rule.requires not in (None, "TOKEN")):
            return None  # a rule the C engine could not decline for exactly
        every_caseless = bool(rule.pattern.flags & re.IGNORECASE)
        plain = tuple(key for key in rule.triggers if not key.startswith("i:") and not every_caseless)
        caseless = tuple(key.removeprefix("i:") for key in rule.triggers if key.startswith("i:") or every_caseless)
        for literals, fold in ((plain, False), (caseless, True)):
            if literals:
                decline.append((literals, fold, rule.requires is not None, _NATIVE_QUICK[quick]))
    _pii_native.setup(PiiFinding, {rule.name: order for order, rule in enumerate(_BUILTIN_RULES)}, _LABELS,
                      sorted(CODE_AT_WORDS), sorted(_WINDOWS_ENV_NAMES), _IBAN_LENGTHS, decline)
    return _pii_native


_NATIVE = _native_engine()


class PiiStripper:
    """Detects, redacts and attests PII in the string fields of one export.

    ``strip_fields`` is the export-level call: each call is one export with its own
    pseudonym table, so two exports can never be linked through their pseudonyms.
    ``strip_text`` shares one table across calls on the same instance, for callers that
    assemble an export piece by piece; ``reset()`` starts a new one.
    """

    def __init__(self, *, prefilter: bool = True, native: bool = True):
        """``prefilter=False`` runs every rule on every string, and ``native=False`` takes the Python engine for
        every string: the same findings either way, slower (for tests)."""
        self._prefilter = prefilter
        self._index = _BUILTIN_INDEX
        self._pseudonyms = _Pseudonyms()
        self._native = _NATIVE if native and prefilter else None

    # -- configuration --

    @property
    def rules(self) -> tuple[PiiRule, ...]:
        return self._index.rules

    def add_rule(self, name: str, category: str, pattern: str | re.Pattern, *,
                 accept: Accept | None = None) -> PiiRule:
        """Register a custom rule; its matches (or the named group ``v``) are redacted.

        ``category`` ``"secret"`` redacts to ``<REDACTED_KEY>`` and takes precedence like the
        built-in secrets; any other category gets pseudonyms ``<CATEGORY_n>``.
        """
        if not name or any(rule.name == name for rule in self._index.rules):
            raise ValueError(f"rule name {name!r} is empty or already used")
        if not category:
            raise ValueError("a rule needs a category")
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        if compiled.fullmatch(""):
            raise ValueError(f"rule {name!r} matches the empty string")
        rule = PiiRule(name, category, compiled, accept, None)
        self._index = _RuleIndex(self._index.rules + (rule,))
        self._native = None  # the C engine knows the built-in rules only
        return rule

    def reset(self) -> None:
        """Forget the pseudonyms of ``strip_text``: the next call starts a new export."""
        self._pseudonyms = _Pseudonyms()

    # -- detection --

    def scan(self, text: str) -> list[PiiFinding]:
        """The findings that stripping would redact, with the pseudonyms they would get in a fresh export."""
        if self._native is not None:
            findings = self._native.scan(text)
            if findings is not None:
                return findings
        pseudonyms = _Pseudonyms()
        return [PiiFinding(c.rule.name, c.rule.category, c.start, c.end,
                           pseudonyms.get(c.rule.category, text[c.start:c.end]))
                for c in self._resolve(self._candidates(text))]

    def contains_pii(self, text: str) -> bool:
        return bool(self._hits(text))

    def assert_clean(self, fields: FieldsInput) -> None:
        """Raise :class:`PiiLeakDetected` if any rule matches any field (the server's re-scan)."""
        for name, value in _as_pairs(fields):
            hits = self._hits(value)
            if hits:
                raise PiiLeakDetected(hits, name)

    # -- stripping --

    def strip_text(self, text: str) -> tuple[str, list[PiiFinding]]:
        """Redact one string with this instance's pseudonym table; returns the text and its findings."""
        redacted, findings = self._redact(text, self._pseudonyms)
        if findings:  # an unchanged text would scan clean again: the scan is deterministic
            self._rescan(redacted, None)
        return redacted, findings

    def strip_fields(self, fields: FieldsInput) -> tuple[FieldsInput, RedactionLog]:
        """Redact every string field of one export and attest it.

        ``fields`` is a mapping name -> value, a sequence of (name, value) pairs, or a
        sequence of strings (named "0", "1", ...); the result has the same shape.
        """
        pairs = _as_pairs(fields)
        pseudonyms = _Pseudonyms()
        counts: Counter = Counter()
        fired: set[str] = set()
        redacted_pairs = []
        for name, value in pairs:
            redacted, findings = self._redact(value, pseudonyms)
            if findings:
                self._rescan(redacted, name)
                counts.update(f.category for f in findings)
                fired.update(f.rule for f in findings)
            redacted_pairs.append((name, redacted))
        log = RedactionLog(counts=dict(sorted(counts.items())), content_hash=content_hash(pairs),
                           rules_fired=sorted(fired), field_count=len(pairs))
        return _same_shape(fields, redacted_pairs), log

    # -- internals --

    def _present(self, text: str) -> set[str]:
        """The trigger keys present in ``text``; provider literals only when the gate is open (pure Python)."""
        index = self._index
        present = {key for key, char in _CHAR_CLASSES if char in text}
        if _ANY_DIGIT.search(text):
            present.add("DIGIT")
        lowered = text.lower()
        present.update("i:" + key for key in index.lower_literals if key in lowered)
        present.update(key for key in index.plain_literals if key in text)
        if _LONG_TOKEN.search(text) is not None:
            present.update(key for key in index.gated_literals if key in text)
        return present

    def _hits(self, text: str) -> list[str]:
        """The names of the rules that match ``text`` anywhere, once per match (overlaps not resolved)."""
        if self._native is not None:
            hits = self._native.hits(text)
            if hits is not None:
                return hits
        return [c.rule.name for c in self._candidates(text)]

    def _candidates(self, text: str) -> list[_Candidate]:
        if not text:
            return []
        found = []
        if not self._prefilter:
            for order, rule in self._index.all:
                found.extend(_Candidate(start, end, rule, order) for start, end in rule.spans(text))
            return found
        if hyperscan is not None and text.isascii():  # one Hyperscan pass checks every key, quick pattern and gate
            for order, rule in self._index.hs_plan(_hs_triggers().matched(text)):
                for start, end in rule.spans(text):
                    found.append(_Candidate(start, end, rule, order))
            return found
        for order, rule in self._index.plan(frozenset(self._present(text))):
            if rule.quick is not None and rule.quick.search(text) is None:
                continue
            for start, end in rule.spans(text):
                found.append(_Candidate(start, end, rule, order))
        return found

    @staticmethod
    def _resolve(candidates: list[_Candidate]) -> list[_Candidate]:
        """Non-overlapping winners, in text order: secrets first, then the longest span, then the earliest rule.

        O(n log n): the winners so far are kept sorted by start, so a candidate checks its two neighbours only.
        """
        if len(candidates) < 2:
            return candidates
        in_order = sorted(candidates, key=_start)
        if all(left.end <= right.start for left, right in zip(in_order, in_order[1:])):
            return in_order  # nothing overlaps (the usual case): every candidate wins
        chosen: list[_Candidate] = []
        starts: list[int] = []
        for cand in sorted(candidates, key=_precedence):
            i = bisect.bisect_right(starts, cand.start)
            if (i and chosen[i - 1].end > cand.start) or (i < len(chosen) and chosen[i].start < cand.end):
                continue
            starts.insert(i, cand.start)
            chosen.insert(i, cand)
        return chosen

    def _redact(self, text: str, pseudonyms: _Pseudonyms) -> tuple[str, list[PiiFinding]]:
        if not isinstance(text, str):
            raise TypeError(f"PII stripping takes strings, not {type(text).__name__}")
        if self._native is not None:
            done = self._native.redact(text, pseudonyms._by_value, pseudonyms._next)
            if done is not None:
                return done
        winners = self._resolve(self._candidates(text))
        if not winners:
            return text, []
        pieces, findings, cursor = [], [], 0
        for cand in winners:
            replacement = pseudonyms.get(cand.rule.category, text[cand.start:cand.end])
            pieces += [text[cursor:cand.start], replacement]
            findings.append(PiiFinding(cand.rule.name, cand.rule.category, cand.start, cand.end, replacement))
            cursor = cand.end
        pieces.append(text[cursor:])
        return "".join(pieces), findings

    def _rescan(self, redacted: str, field_name: str | None) -> None:
        hits = self._hits(redacted)
        if hits:
            raise PiiLeakDetected(hits, field_name)


def _as_pairs(fields: FieldsInput) -> list[tuple[str, str]]:
    if isinstance(fields, Mapping):
        pairs = list(fields.items())
    elif isinstance(fields, str):
        raise TypeError("strip_fields takes a collection of fields; use strip_text for one string")
    else:
        items = list(fields)
        if all(isinstance(item, str) for item in items):
            pairs = [(str(index), item) for index, item in enumerate(items)]
        else:
            pairs = [tuple(item) for item in items]
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str) or not isinstance(pair[1], str):
            raise TypeError("every field must be a (str name, str value) pair")
    return pairs


def _same_shape(original: FieldsInput, pairs: list[tuple[str, str]]) -> FieldsInput:
    if isinstance(original, Mapping):
        return dict(pairs)
    if all(isinstance(item, str) for item in original):
        return [value for _, value in pairs]
    return [(name, value) for name, value in pairs]
