"""The federated export client: build, sign and post exports; verify the log; import aggregates. No Django.

:class:`ExportBuilder` runs the spec's pipeline, in this order:

1. ``add_priors`` / ``add_weights`` / ``add_string_field`` collect what to share;
2. PII stripping (``privacy.pii.PiiStripper.strip_fields``) of every string, string fields and prior
   bucket / arm names together, so pseudonyms are consistent within the export;
3. L2 clipping: the weights to ``clip_norm``, the priors' evidence vector (α - 1, β - 1, ...) to
   ``prior_clip_norm``;
4. noise from the OS CSPRNG (``privacy.federated.noise``): Gaussian σ = z·C, or Laplace b = Δ₁/ε with
   Δ₁ = √d·C (an L2 clip bounds the L1 norm by √d·C);
5. contributor-side accounting: every noised part is one mechanism event; the export's event is their
   composition, and its ε at δ is computed by :mod:`accounting.proofs`, the very code the server checks
   the claim with. A :class:`LocalBudget` refuses an export that would exceed the contributor's own cap;
6. the manifest, the DP proof (``parts``: one per noised part, each naming the segments it ``covers``,
   their composed ``epsilon``) and the redaction log;
7. the Ed25519 signature over the RFC 8785 canonical bytes of everything else.

The unit of privacy is the contributor's update, added or removed: an export with the update replaced by zero
is (ε, δ)-indistinguishable from this one (docs/privacy.md, "Federated exports").

:class:`FederationClient` posts exports (no user credentials: the signature authenticates) and fetches
signed tree heads, inclusion and consistency proofs and aggregates; :func:`verify_inclusion` checks that an
entry is in the log a trusted key signed, ``FederationClient.verify_extends`` that a newer head extends a kept one. :func:`import_priors` merges an aggregate's priors with version-aware dampening.
"""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from urllib.parse import urlencode, urlsplit

import numpy as np

from accounting.accountants import PLDAccountant
from accounting.events import MechanismEvent
from accounting.proofs import NoisedPart, proof_epsilon_micro
from privacy.epsilon import from_micro, to_micro
from privacy.federated import noise, signing, transparency
from privacy.federated.canonical import canonical_bytes, loads
from privacy.federated.priors import BetaPrior, merge_priors
from privacy.pii import PiiStripper

FORMAT_VERSION = 1
WEIGHTS_KIND = "lora_weights"
PRIOR_KIND = "transfer_prior"
FIELDS_KIND = "string_fields"


class FederationError(Exception):
    """``code``: the server's error code for a refused request, or the SDK's own (``privacy_budget_exhausted``,
    ``invalid_export``, ``network_error``, ``bad_response``, ``inclusion_failed``)."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


def _number(value: float) -> Fraction:
    """A JSON number as the server reads it (``Decimal(repr(x))``), so both sides compute one ε."""
    return Fraction(Decimal(repr(float(value))))


class LocalBudget:
    """The contributor's own ledger: the events it exported, composed (PLD at ``delta``) under ``epsilon_cap``."""

    def __init__(self, epsilon_cap: float, delta: float = 1e-5):
        self.cap_micro = to_micro(epsilon_cap)
        self.accountant = PLDAccountant(Decimal(repr(delta)))
        self.events: list[MechanismEvent] = []

    def spent(self) -> Decimal:
        return self.accountant.spent(self.events) if self.events else Decimal(0)

    def charge(self, event: MechanismEvent) -> None:
        """Record ``event`` or raise ``privacy_budget_exhausted`` (spec PrivacyBudgetExhausted), recording nothing."""
        after = self.accountant.spent_micro([*self.events, event])
        if after > self.cap_micro:
            raise FederationError("privacy_budget_exhausted", f"this export would bring the contributor's epsilon to "
                                  f"{from_micro(after)}, over its cap {from_micro(self.cap_micro)}")
        self.events.append(event)


class ExportBuilder:
    """One export (module docstring). ``mechanism`` "gaussian" takes ``noise_multiplier`` z (σ = z·C per part);
    "laplace" takes ``part_epsilon`` (b = Δ₁/ε per part) and ``delta`` may be 0."""

    def __init__(self, private_key, *, domain: str, observations: int, quality: float = 1.0,
                 mechanism: str = "gaussian", noise_multiplier: float = 1.0, part_epsilon: float = 1.0,
                 delta: float = 1e-5, clip_norm: float = 1.0, prior_clip_norm: float = 10.0,
                 budget: LocalBudget | None = None, stripper: PiiStripper | None = None, source=None):
        if mechanism not in ("gaussian", "laplace"):
            raise FederationError("invalid_export", "mechanism must be gaussian or laplace")
        self._key = signing.load_private_key(private_key)
        self.pseudonym = signing.contributor_pseudonym(self._key)
        self.domain, self.observations, self.quality = domain, observations, quality
        self.mechanism, self.noise_multiplier, self.part_epsilon = mechanism, noise_multiplier, part_epsilon
        self.delta, self.clip_norm, self.prior_clip_norm = delta, clip_norm, prior_clip_norm
        self.budget, self._stripper, self._source = budget, stripper or PiiStripper(), source
        self._weights: np.ndarray | None = None
        self._priors: list[tuple[str, str, float, float]] = []
        self._fields: dict[str, str] = {}

    # 1. what to share
    def add_weights(self, values) -> ExportBuilder:
        vector = np.asarray(values, dtype=np.float64)
        if vector.ndim != 1 or not vector.size or not np.isfinite(vector).all():
            raise FederationError("invalid_export", "weights must be a non-empty finite vector")
        self._weights = vector
        return self

    def add_priors(self, priors: Mapping[tuple[str, str], tuple[float, float]]) -> ExportBuilder:
        """``{(bucket, arm): (alpha, beta)}``, Beta priors on a uniform base (alpha, beta >= 1)."""
        for (bucket, arm), (alpha, beta) in priors.items():
            BetaPrior(alpha, beta)  # validates
            self._priors.append((str(bucket), str(arm), float(alpha), float(beta)))
        return self

    def add_string_field(self, name: str, text: str) -> ExportBuilder:
        self._fields[name] = text
        return self

    # 2-7
    def build(self) -> dict:
        """The signed export body, ready for ``POST /api/v1/federation/exports``."""
        if self._weights is None and not self._priors:
            raise FederationError("invalid_export", "nothing to export: add weights or priors")
        stripped, redaction_log = self._strip()
        segments, parts = [], []
        if self._weights is not None:
            values, part = self._noised(self._weights, self.clip_norm)
            segments.append({"kind": WEIGHTS_KIND, "values": values})
            parts.append(part | {"covers": [len(segments) - 1]})
        if self._priors:
            first = len(segments)
            evidence = np.array([x for _, _, a, b in self._priors for x in (a - 1.0, b - 1.0)])
            values, part = self._noised(evidence, self.prior_clip_norm)
            for n, (_, _, _, _) in enumerate(self._priors):
                # Clamping the noised evidence at 0 is post-processing (Dwork & Roth 2014, Prop. 2.1).
                segments.append({"kind": PRIOR_KIND, "bucket": stripped[f"prior.{n}.bucket"],
                                 "arm": stripped[f"prior.{n}.arm"], "alpha": 1.0 + max(0.0, values[2 * n]),
                                 "beta": 1.0 + max(0.0, values[2 * n + 1])})
            parts.append(part | {"covers": list(range(first, len(segments)))})
        if self._fields:
            segments.append({"kind": FIELDS_KIND, "fields": {name: stripped[f"field.{name}"] for name in self._fields}})
        proof = self._account(parts)
        unsigned = {
            "contributor": self.pseudonym,
            "manifest": {"format_version": FORMAT_VERSION, "domain": self.domain, "observations": self.observations,
                         "quality": self.quality, "contributor_pseudonym": self.pseudonym,
                         "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "nonce": secrets.token_hex(16), "segments": [s["kind"] for s in segments],
                         "privacy_budget_spent": proof["epsilon"]},
            "proof": proof,
            "redaction_log": redaction_log.to_dict(),
            "segments": segments,
        }
        return unsigned | {"signature": signing.sign(self._key, unsigned).hex()}

    def _strip(self):
        pairs = [(f"prior.{n}.{what}", value) for n, (bucket, arm, _, _) in enumerate(self._priors)
                 for what, value in (("bucket", bucket), ("arm", arm))]
        pairs += [(f"field.{name}", text) for name, text in self._fields.items()]
        redacted, log = self._stripper.strip_fields(pairs)
        return dict(redacted), log

    def _noised(self, vector: np.ndarray, clip: float) -> tuple[list[float], dict]:
        clipped = noise.clip_l2(vector, clip)
        if self.mechanism == "gaussian":
            scale, sensitivity = self.noise_multiplier * clip, clip
            noised = clipped + noise.gaussian(clipped.size, scale, self._source)
        else:
            sensitivity = clip * float(np.sqrt(clipped.size))  # ||x||₁ ≤ √d·||x||₂
            scale = sensitivity / self.part_epsilon
            noised = clipped + noise.laplace(clipped.size, scale, self._source)
        return noised.tolist(), {"mechanism": self.mechanism, "noise_scale": scale, "sensitivity": sensitivity,
                                 "clip_norm": clip}

    def _account(self, parts: list[dict]) -> dict:
        delta = Decimal(repr(self.delta)) if self.delta else Decimal(0)
        event, micro = proof_epsilon_micro(
            [NoisedPart(p["mechanism"], _number(p["noise_scale"]), _number(p["sensitivity"]), _number(p["clip_norm"]))
             for p in parts], delta)
        if self.budget is not None:
            self.budget.charge(event)
        return {"parts": parts, "delta": self.delta, "epsilon": float(from_micro(micro)),
                "composition": "pld" if delta else "basic"}


# --- talking to the registry ---------------------------------------------------------------------------


class FederationClient:
    """JSON over HTTP to one registry (``http.client``, one connection per call; not for high rates)."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self._parts, self._timeout = parts, timeout

    def _request(self, method: str, path: str, body=None, query: dict | None = None):
        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        connection = cls(self._parts.hostname, self._parts.port, timeout=self._timeout)
        url = self._parts.path.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        try:
            connection.request(method, url, body=None if body is None else json.dumps(body).encode(),
                               headers={"Content-Type": "application/json", "Accept": "application/json"})
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise FederationError("network_error", str(exc)) from None
        finally:
            connection.close()
        try:
            data = loads(raw)
        except ValueError:
            raise FederationError("bad_response", f"HTTP {status}: not JSON", status) from None
        if status >= 400:
            raise FederationError(data.get("code", f"http_{status}") if isinstance(data, dict) else f"http_{status}",
                                  data.get("message", "") if isinstance(data, dict) else "", status)
        return data

    def post_export(self, body: dict) -> dict:
        return self._request("POST", "/api/v1/federation/exports", body)

    def signed_head(self) -> signing.SignedTreeHead:
        return signing.SignedTreeHead.from_json(self._request("GET", "/api/v1/federation/log/head"))

    def inclusion_proof(self, index: int, tree_size: int) -> dict:
        return self._request("GET", "/api/v1/federation/log/inclusion", query={"index": index, "size": tree_size})

    def consistency_proof(self, old_size: int, new_size: int) -> dict:
        return self._request("GET", "/api/v1/federation/log/consistency", query={"old": old_size, "new": new_size})

    def verify_extends(self, old: signing.SignedTreeHead, trusted_keys: Iterable) -> signing.SignedTreeHead:
        """Fetch the current signed head and prove it extends ``old`` (a head this client kept): the log was
        only appended to since. Returns the new head, or raises ``inclusion_failed`` (a rewritten, truncated
        or forked log, or a head no trusted key signed)."""
        new = self.signed_head()
        try:
            for head in (old, new):
                signing.verify_tree_head(head, trusted_keys)
        except signing.SignatureError as exc:
            raise FederationError("inclusion_failed", f"tree head: {exc}") from None
        proof = [bytes.fromhex(node) for node in self.consistency_proof(old.tree_size, new.tree_size)["proof"]]
        if not transparency.verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof):
            raise FederationError("inclusion_failed", f"the tree of {new.tree_size} does not extend the signed tree "
                                  f"of {old.tree_size}")
        return new

    def latest_aggregate(self, domain: str) -> dict:
        return self._request("GET", "/api/v1/federation/aggregates/latest", query={"domain": domain})

    def verify_included(self, entry: bytes, index: int, trusted_keys: Iterable) -> signing.SignedTreeHead:
        """Fetch the signed head and the inclusion proof of ``entry`` at ``index``; verify both
        (:func:`verify_inclusion`) and return the head, or raise ``inclusion_failed``."""
        head = self.signed_head()
        proof = self.inclusion_proof(index, head.tree_size)
        verify_inclusion(entry, index, [bytes.fromhex(node) for node in proof["audit_path"]], head, trusted_keys)
        return head


def export_entry(body: dict) -> bytes:
    """The bytes the log holds for a posted export: the canonical form of the whole body, signature included."""
    return canonical_bytes(body)


def verify_inclusion(entry: bytes, index: int, audit_path: list[bytes], head: signing.SignedTreeHead,
                     trusted_keys: Iterable) -> None:
    """Raise ``inclusion_failed`` unless a trusted key signed ``head`` and ``audit_path`` proves ``entry`` is leaf
    ``index`` of the tree that head describes (RFC 9162 §2.1.3.2)."""
    try:
        signing.verify_tree_head(head, trusted_keys)
    except signing.SignatureError as exc:
        raise FederationError("inclusion_failed", f"tree head: {exc}") from None
    if not transparency.verify_inclusion(transparency.leaf_hash(entry), index, head.tree_size, audit_path,
                                         head.root_hash):
        raise FederationError("inclusion_failed", f"entry {index} is not in the signed tree of {head.tree_size}")


def import_priors(local: Mapping[tuple[str, str], BetaPrior], aggregate_entry: dict, local_version: int,
                  decay: float = 0.5) -> dict[tuple[str, str], BetaPrior]:
    """Merge an aggregate's pooled priors into ``local``, dampened by the format-version gap (the spec's
    ImportMerger; ``privacy.federated.priors.merge_priors``)."""
    imported = {(p["bucket"], p["arm"]): BetaPrior(p["alpha"], p["beta"]) for p in aggregate_entry.get("priors", [])}
    return merge_priors(local, imported, aggregate_entry["format_version"], local_version, decay)
