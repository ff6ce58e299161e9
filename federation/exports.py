"""The export registry's writes: contributors, and accepting a signed export (docs/api.md, "Export registry").

``submit_export`` checks, in this order, and writes nothing unless every check passes:

1. the Ed25519 signature over ``canonical_bytes`` of the body without ``signature``, by the key of the
   active contributor the body names (``unknown_contributor``, ``invalid_signature``);
2. every string of the body, re-scanned for PII (``pii_leak``);
3. the DP proof: ε recomputed by the server's accountant from the mechanism parameters (``proof_mismatch``),
   and the norm of the weights a proof part ``covers`` against its clip norm and noise (``byzantine_outlier``);
4. under the contributor's row lock: replay (``duplicate_export``), then the FederationPolicy (segment kinds,
   domains, quality gate, rate limit) and the ledger charge on ``contributor:<id>``.

Then the export is stored and appended to the transparency log, in the same transaction.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounting.events import MechanismEvent
from accounting.proofs import NoisedPart, ProofError, proof_epsilon_micro
from accounting.services.ledger import charge
from accounting.services.policies import set_partition_cap
from accounting.types import Partition, Spender, Subject
from deploy.api.errors import ApiError
from deploy.api.parsing import finite_decimal
from federation import log
from privacy.federated import signing
from privacy.federated.canonical import CanonicalizationError, canonical_bytes
from federation.models import Contributor, Export
from privacy.epsilon import MICRO_PER_EPSILON, from_micro
from privacy.pii import PiiLeakDetected, PiiStripper

BODY_FIELDS = {"manifest", "proof", "redaction_log", "segments", "signature", "contributor"}
FORMAT_VERSION = 1


# --- contributors ----------------------------------------------------------------------------------


def register_contributor(*, name: str, public_key, lifetime_epsilon_micro: int) -> Contributor:
    """Register a contributor (raw, hex, base64 or PEM Ed25519 public key) with its lifetime ε cap."""
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or name != name.strip():
        raise ApiError("invalid_contributor", "name must be 1-100 characters without surrounding spaces.",
                       field="name")
    try:
        raw = signing.public_key_bytes(public_key)
    except signing.KeyFormatError as exc:
        raise ApiError("invalid_public_key", f"public_key is not an Ed25519 public key: {exc}.",
                       field="public_key") from None
    pseudonym = signing.contributor_pseudonym(raw)
    with transaction.atomic():
        if Contributor.objects.filter(name=name).exists():
            raise ApiError("contributor_exists", f"A contributor named {name!r} exists.", http_status=409)
        if Contributor.objects.filter(pseudonym=pseudonym).exists():
            raise ApiError("contributor_exists", "A contributor with this public key exists.", http_status=409)
        contributor = Contributor.objects.create(name=name, public_key=raw, pseudonym=pseudonym)
        set_partition_cap(scope=contributor.scope, lifetime_epsilon_micro=lifetime_epsilon_micro)
    return contributor


def deactivate_contributor(*, contributor: Contributor) -> Contributor:
    """Refuse the contributor's future exports; what it exported stays (the log is append-only)."""
    Contributor.objects.filter(pk=contributor.pk).update(active=False)
    contributor.refresh_from_db()
    return contributor


# --- the policy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FederationPolicy:
    """What the registry accepts (the spec's FederationPolicy); ``settings.FEDERATION_POLICY`` overrides fields.

    ``allowed_*`` None allows everything not denied (unknown segment kinds pass: forward compatibility).
    """

    allowed_segment_kinds: frozenset | None = None
    denied_segment_kinds: frozenset = frozenset()
    allowed_domains: frozenset | None = None
    denied_domains: frozenset = frozenset()
    min_observations: int = 1
    min_quality: float = 0.0
    max_exports_per_day: int = 100

    @classmethod
    def current(cls) -> FederationPolicy:
        overrides = dict(getattr(settings, "FEDERATION_POLICY", {}))
        for name in ("allowed_segment_kinds", "denied_segment_kinds", "allowed_domains", "denied_domains"):
            if overrides.get(name) is not None:
                overrides[name] = frozenset(overrides[name])
        return cls(**overrides)


def _apply_policy(policy: FederationPolicy, contributor: Contributor, manifest: dict, kinds: list[str]) -> None:
    for kind in kinds:
        if kind in policy.denied_segment_kinds or (policy.allowed_segment_kinds is not None
                                                   and kind not in policy.allowed_segment_kinds):
            raise ApiError("segment_denied", f"The policy does not accept segments of kind {kind!r}.",
                           http_status=403, field="segments")
    domain = manifest["domain"]
    if domain in policy.denied_domains or (policy.allowed_domains is not None and domain not in policy.allowed_domains):
        raise ApiError("domain_denied", f"The policy does not accept the domain {domain!r}.", http_status=403,
                       field="manifest.domain")
    if manifest["observations"] < policy.min_observations:
        raise ApiError("insufficient_observations", f"The export has {manifest['observations']} observations; "
                       f"the policy needs at least {policy.min_observations}.", http_status=403)
    if manifest.get("quality", 1.0) < policy.min_quality:
        raise ApiError("quality_below_threshold", f"quality is below the policy minimum {policy.min_quality}.",
                       http_status=403)
    since = timezone.now() - timedelta(days=1)
    if Export.objects.filter(contributor=contributor, received_at__gte=since).count() >= policy.max_exports_per_day:
        raise ApiError("rate_limited", f"At most {policy.max_exports_per_day} exports per contributor per 24 hours.",
                       http_status=429)


# --- reading the body ------------------------------------------------------------------------------


def _invalid(message: str, field: str | None = None) -> ApiError:
    return ApiError("invalid_export", message, **({"field": field} if field else {}))


def _read_body(body) -> tuple[dict, bytes, str]:
    """(the signed part, the signature, the contributor's pseudonym); ``invalid_export`` on a bad shape."""
    if not isinstance(body, dict):
        raise ApiError("invalid_body", "The body must be a JSON object.")
    if unknown := sorted(body.keys() - BODY_FIELDS):
        raise ApiError("unknown_field", f"Unknown field(s): {', '.join(unknown)}.", field=unknown[0])
    if missing := sorted(BODY_FIELDS - body.keys()):
        raise _invalid(f"Missing field(s): {', '.join(missing)}.", missing[0])
    for name in ("manifest", "proof", "redaction_log"):
        if not isinstance(body[name], dict):
            raise _invalid(f"{name} must be an object.", name)
    segments = body["segments"]
    if not isinstance(segments, list) or not all(isinstance(s, dict) and isinstance(s.get("kind"), str)
                                                  for s in segments):
        raise _invalid("segments must be a list of objects, each with a string kind.", "segments")
    signature, pseudonym = body["signature"], body["contributor"]
    try:
        signature = bytes.fromhex(signature) if isinstance(signature, str) else None
    except ValueError:
        signature = None
    if signature is None or len(signature) != signing.SIGNATURE_BYTES:
        raise ApiError("invalid_signature", "signature must be 128 hex digits (an Ed25519 signature).",
                       http_status=401)
    if not isinstance(pseudonym, str):
        raise ApiError("unknown_contributor", "contributor must be a registered contributor's pseudonym.",
                       http_status=401)
    return {name: value for name, value in body.items() if name != "signature"}, signature, pseudonym


def _read_manifest(manifest: dict) -> dict:
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ApiError("unsupported_version", f"manifest.format_version must be {FORMAT_VERSION}.",
                       field="manifest.format_version")
    domain, observations, quality = manifest.get("domain"), manifest.get("observations"), manifest.get("quality", 1.0)
    if not isinstance(domain, str) or not 1 <= len(domain) <= 200:
        raise _invalid("manifest.domain must be a string of 1-200 characters.", "manifest.domain")
    if isinstance(observations, bool) or not isinstance(observations, int) or observations < 0:
        raise _invalid("manifest.observations must be a non-negative integer.", "manifest.observations")
    if isinstance(quality, bool) or not isinstance(quality, (int, float)):
        raise _invalid("manifest.quality must be a number.", "manifest.quality")
    return manifest


def _verify_signature(signed: dict, signature: bytes, pseudonym: str) -> Contributor:
    contributor = Contributor.objects.filter(pseudonym=pseudonym, active=True).first()
    if contributor is None:
        raise ApiError("unknown_contributor", "No active contributor has this pseudonym.", http_status=401)
    try:
        signing.verify(bytes(contributor.public_key), signed, signature)
    except signing.SignatureError:
        raise ApiError("invalid_signature", "The signature does not verify over the canonical body.",
                       http_status=401) from None
    return contributor


def _strings(value, path: str):
    """(path, text) of every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}#key", key
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from _strings(item, f"{path}[{position}]")


def _rescan_pii(signed: dict) -> None:
    fields = [(path, text) for path, text in _strings(signed, "body") if path != "body.contributor"]
    try:
        PiiStripper().assert_clean(fields)
    except PiiLeakDetected as exc:  # the rule names and the field, never the text
        raise ApiError("pii_leak", f"A string still holds PII: {exc}.", field=exc.field_name,
                       rules=list(exc.rules)) from None


# --- the DP proof ----------------------------------------------------------------------------------


def _part(part, where: str) -> NoisedPart:
    if not isinstance(part, dict):
        raise ApiError("proof_mismatch", f"{where} must be an object.", field=where)

    def number(name: str) -> Fraction:
        value = finite_decimal(part.get(name))
        if value is None or value <= 0:
            raise ApiError("proof_mismatch", f"{where}.{name} must be a positive number.", field=f"{where}.{name}")
        return Fraction(value)

    return NoisedPart(mechanism=part.get("mechanism"), noise_scale=number("noise_scale"),
                      sensitivity=number("sensitivity"), clip_norm=number("clip_norm"))


def verify_proof(proof: dict) -> tuple[MechanismEvent, int, Decimal]:
    """(the event the proof describes, its ε at the proof's δ in µε as the server computes it, δ).

    A proof is one mechanism (``mechanism``, ``noise_scale``, ``sensitivity``, ``clip_norm`` at the top
    level) or ``parts``: several noised parts of one export, composed (PLD), through
    :mod:`accounting.proofs`, the code the SDK claims its ε with. Raises ``proof_mismatch`` when the
    claimed ``epsilon`` is not the recomputed one to within 1e-6, ``invalid_epsilon`` when it is not positive.
    """
    delta = finite_decimal(proof.get("delta"))
    if delta is None or not 0 <= delta < Decimal("0.001"):
        raise ApiError("invalid_delta", "proof.delta must be a number in [0, 0.001).", field="proof.delta")
    claimed = finite_decimal(proof.get("epsilon"))
    if claimed is not None and claimed <= 0:  # spec InvalidEpsilon
        raise ApiError("invalid_epsilon", "proof.epsilon must be a positive number.", field="proof.epsilon")
    listed = "parts" in proof
    parts = proof["parts"] if listed else [proof]
    if not isinstance(parts, list):
        raise ApiError("proof_mismatch", "proof.parts must be a non-empty list.", field="proof.parts")
    try:
        event, computed_micro = proof_epsilon_micro(
            [_part(part, f"proof.parts[{n}]" if listed else "proof") for n, part in enumerate(parts)], delta,
            listed=listed)
    except ProofError as exc:
        raise ApiError(exc.code, exc.message, field=exc.field) from None
    if claimed is None or abs(claimed * MICRO_PER_EPSILON - computed_micro) > 1:
        raise ApiError("proof_mismatch", f"The proof claims epsilon {proof.get('epsilon')!r}; its mechanism "
                       f"parameters give {from_micro(computed_micro)} at delta {delta}.", field="proof.epsilon",
                       epsilon_computed=float(from_micro(computed_micro)))
    return event, computed_micro, delta


# --- the noised weights against their proof (spec ByzantineOutlier) ---------------------------------

NORM_CHECK_TAIL = 40.0  # t: a correct export fails the check with probability at most e^-40


def noise_norm_bound(mechanism: str, noise_scale: float, dimension: int, t: float = NORM_CHECK_TAIL) -> float:
    """A bound the L2 norm of the noise exceeds with probability at most e^-t."""
    if mechanism == "gaussian":
        # ||N(0, σ²I_d)||² / σ² ≤ d + 2√(dt) + 2t but with probability e^-t (Laurent & Massart 2000, Lemma 1).
        return noise_scale * math.sqrt(dimension + 2 * math.sqrt(dimension * t) + 2 * t)
    # |Lap(b)| > b(ln d + t) for some coordinate with probability ≤ d·e^-(ln d + t) = e^-t (union bound), and
    # ||x||₂ ≤ √d·||x||∞.
    return noise_scale * math.sqrt(dimension) * (math.log(dimension) + t)


def _check_noised_norms(signed: dict) -> None:
    """A part that names the ``lora_weights`` segments it ``covers`` claims they were clipped to ``clip_norm``
    and then noised: their norm can then exceed ``clip_norm`` only by the noise's. A larger one did not come
    from the mechanism the proof describes (a scaled or replaced update): ``byzantine_outlier``."""
    proof, segments = signed["proof"], signed["segments"]
    for n, part in enumerate(proof["parts"] if "parts" in proof else [proof]):
        covers = part.get("covers")
        if not isinstance(covers, list) or not covers:
            continue
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(segments) for i in covers):
            raise _invalid("proof part covers must list segment indices.", f"proof.parts[{n}].covers")
        if any(segments[i]["kind"] != "lora_weights" for i in covers):
            continue  # priors are clamped after the noise (post-processing): their norm says nothing
        values = [value for i in covers for value in (segments[i].get("values") or [])]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise _invalid("a lora_weights segment needs non-empty numeric values.", "segments")
        bound = float(part["clip_norm"]) + noise_norm_bound(part["mechanism"], float(part["noise_scale"]), len(values))
        if math.sqrt(math.fsum(v * v for v in values)) > bound:
            raise ApiError("byzantine_outlier", f"The weights covered by proof part {n} have a norm no clipped, "
                           "noised update of this proof could have (beyond clip_norm plus the noise's bound).",
                           field=f"proof.parts[{n}]" if "parts" in proof else "proof")


# --- accepting an export ---------------------------------------------------------------------------


def export_digest(signed: dict) -> str:
    """SHA-256 of the canonical bytes of the signed part: what makes two posts the same export."""
    return hashlib.sha256(canonical_bytes(signed)).hexdigest()


def submit_export(*, body) -> Export:
    """Check a posted export (module docstring), charge it, store it and log it; or raise, writing nothing."""
    signed, signature, pseudonym = _read_body(body)
    try:
        digest = export_digest(signed)
    except CanonicalizationError as exc:
        raise ApiError("serialization_error", f"The body has no RFC 8785 canonical form, so no signature can cover "
                       f"it: {exc}.") from None
    contributor = _verify_signature(signed, signature, pseudonym)
    _rescan_pii(signed)
    manifest = _read_manifest(signed["manifest"])
    event, claimed_micro, delta = verify_proof(signed["proof"])
    _check_noised_norms(signed)
    kinds = [segment["kind"] for segment in signed["segments"]]
    try:
        with transaction.atomic():
            return _accept(contributor, body, digest, manifest, kinds, event, claimed_micro, delta)
    except IntegrityError:  # the same export committed concurrently by another request
        if Export.objects.filter(digest=digest).exists():
            raise _duplicate() from None
        raise


def _duplicate() -> ApiError:
    return ApiError("duplicate_export", "This export was already accepted.", http_status=409)


def _accept(contributor, body, digest, manifest, kinds, event, claimed_micro, delta) -> Export:
    contributor = Contributor.objects.select_for_update().get(pk=contributor.pk)  # serializes its exports
    if not contributor.active:
        raise ApiError("unknown_contributor", "No active contributor has this pseudonym.", http_status=401)
    if Export.objects.filter(digest=digest).exists():
        raise _duplicate()
    _apply_policy(FederationPolicy.current(), contributor, manifest, kinds)
    paid = charge(spender=Spender(contributor.scope, None), event=event, partitions=[Partition(contributor.scope)],
                  subject=Subject("export", digest))
    entry = canonical_bytes(body)
    export = Export.objects.create(
        contributor=contributor, canonical_json=entry.decode(), digest=digest, domain=manifest["domain"],
        segment_kinds=kinds, observations=manifest["observations"], epsilon_claimed_micro=claimed_micro,
        proof_delta=float(delta), epsilon_charged_micro=paid.entry.epsilon_micro)
    log.append(entry, export=export)
    return export
