"""The SDK's ExportBuilder (issue 10), pure: no server, no database.

Statistical checks state their tolerance: with n draws, a sample sd is within 5 standard errors
(sd / sqrt(2n)) of the truth but with probability ~6e-7.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from accounting.accountants import PLDAccountant
from accounting.events import ComposedEvent, DiscreteLaplaceEvent, GaussianEvent
from accounting.proofs import NoisedPart, ProofError, proof_epsilon_micro
from privacy.federated import noise, signing
from privacy.federated.canonical import canonical_bytes
from telemetry.sdk.federation import ExportBuilder, FederationError, LocalBudget


def unsigned(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "signature"}


def test_the_export_is_signed_by_the_key_its_pseudonym_hashes():
    key = Ed25519PrivateKey.generate()
    body = ExportBuilder(key, domain="d", observations=5).add_weights([0.1, 0.2]).build()
    assert body["contributor"] == signing.contributor_pseudonym(key.public_key())
    signing.verify(key.public_key(), unsigned(body), bytes.fromhex(body["signature"]))
    with pytest.raises(signing.SignatureError):
        edited = unsigned(body) | {"manifest": body["manifest"] | {"observations": 6}}
        signing.verify(key.public_key(), edited, bytes.fromhex(body["signature"]))


def test_pii_is_stripped_from_fields_and_prior_names_with_one_pseudonym_table():
    body = (ExportBuilder(Ed25519PrivateKey.generate(), domain="d", observations=5)
            .add_priors({("user alice@corp.example", "arm"): (2.0, 3.0)})
            .add_string_field("a", "mail alice@corp.example from 10.1.2.3")
            .add_string_field("b", "again alice@corp.example").build())
    text = canonical_bytes(body).decode()
    assert "alice@" not in text and "10.1.2.3" not in text
    fields = next(s for s in body["segments"] if s["kind"] == "string_fields")["fields"]
    prior = next(s for s in body["segments"] if s["kind"] == "transfer_prior")
    email = fields["b"].split()[-1]
    assert email.startswith("<EMAIL") and email in fields["a"] and email in prior["bucket"]  # consistent
    assert body["redaction_log"]["counts"] == {"email": 3, "ip": 1}
    assert body["redaction_log"]["field_count"] == 4 and len(body["redaction_log"]["content_hash"]) == 64


def test_weights_are_clipped_before_the_noise():
    # a huge vector, almost no noise: what is sent has the clip norm
    body = (ExportBuilder(Ed25519PrivateKey.generate(), domain="d", observations=5, noise_multiplier=0.3,
                          clip_norm=1e-3).add_weights(np.full(4, 1e6)).build())
    sent = np.array(body["segments"][0]["values"])
    # noise sd 3e-4 per coordinate: the norm is within 1e-3 + 5 sd * sqrt(4) of the clip
    assert np.linalg.norm(sent) < 1e-3 + 5 * 3e-4 * 2
    assert np.all(sent > -5 * 3e-4)  # the clipped vector is positive; nothing was flipped


def test_gaussian_noise_has_sd_z_times_c():
    z, clip, d = 1.5, 2.0, 20_000
    body = ExportBuilder(Ed25519PrivateKey.generate(), domain="d", observations=5, noise_multiplier=z,
                         clip_norm=clip).add_weights(np.zeros(d)).build()
    values = np.array(body["segments"][0]["values"])
    sd = z * clip
    assert abs(values.std() - sd) < 5 * sd / np.sqrt(2 * d) and abs(values.mean()) < 5 * sd / np.sqrt(d)
    part = body["proof"]["parts"][0]
    assert (part["noise_scale"], part["sensitivity"], part["clip_norm"], part["covers"]) == (sd, clip, clip, [0])


def test_laplace_noise_uses_the_l1_sensitivity_of_an_l2_clip():
    d, clip, eps = 10_000, 1.0, 2.0
    body = ExportBuilder(Ed25519PrivateKey.generate(), domain="d", observations=5, mechanism="laplace",
                         part_epsilon=eps, delta=0, clip_norm=clip).add_weights(np.zeros(d)).build()
    part = body["proof"]["parts"][0]
    assert part["sensitivity"] == pytest.approx(clip * np.sqrt(d)) and part["noise_scale"] == pytest.approx(100 / eps)
    values = np.array(body["segments"][0]["values"])
    sd = np.sqrt(2) * part["noise_scale"]  # Laplace(b) has variance 2b²; its sd estimate has a wider error (kurtosis 6)
    assert abs(values.std() - sd) < 5 * sd * np.sqrt(5 / (4 * d))
    assert body["proof"]["epsilon"] == eps and body["proof"]["delta"] == 0


def test_every_noised_part_is_in_the_proof_and_epsilon_is_their_composition():
    body = (ExportBuilder(Ed25519PrivateKey.generate(), domain="d", observations=5, noise_multiplier=1.2,
                          clip_norm=1.0, prior_clip_norm=5.0, delta=1e-6)
            .add_weights(np.ones(8)).add_priors({("b", "a1"): (3.0, 1.0), ("b", "a2"): (1.0, 4.0)}).build())
    parts = body["proof"]["parts"]
    assert [p["covers"] for p in parts] == [[0], [1, 2]]  # weights; both priors in one noised vector
    composed = ComposedEvent(parts=(GaussianEvent(1.2), GaussianEvent(1.2)))
    expected = PLDAccountant(Decimal("0.000001")).spent_micro([composed])
    assert body["proof"]["epsilon"] == expected / 1_000_000
    assert expected > PLDAccountant(Decimal("0.000001")).spent_micro([GaussianEvent(1.2)])  # more than one part's
    assert body["manifest"]["privacy_budget_spent"] == body["proof"]["epsilon"]
    assert all(s["alpha"] >= 1 and s["beta"] >= 1 for s in body["segments"][1:])  # clamped: post-processing


def test_the_local_budget_refuses_an_export_over_the_cap_and_records_nothing():
    budget = LocalBudget(epsilon_cap=2.0, delta=1e-5)
    builder = ExportBuilder(Ed25519PrivateKey.generate(), domain="d", observations=5, noise_multiplier=3.0,
                            budget=budget).add_weights([1.0])
    builder.build()
    spent = budget.spent()
    assert 0 < spent < 2
    while True:
        try:
            builder.build()
        except FederationError as exc:
            assert exc.code == "privacy_budget_exhausted"
            break
    assert budget.spent() <= 2 and len(budget.events) >= 2


def test_proof_math_refuses_too_little_noise_and_bad_parts():
    with pytest.raises(ProofError) as small:
        proof_epsilon_micro([NoisedPart("gaussian", Fraction(1, 10), Fraction(1), Fraction(1))], Decimal("1e-5"))
    assert small.value.code == "invalid_epsilon"
    with pytest.raises(ProofError) as clip:
        proof_epsilon_micro([NoisedPart("gaussian", Fraction(1), Fraction(1, 2), Fraction(1))], Decimal("1e-5"))
    assert clip.value.code == "proof_mismatch"
    with pytest.raises(ProofError, match="at most 16"):
        proof_epsilon_micro([NoisedPart("laplace", Fraction(10), Fraction(1), Fraction(1))] * 17, Decimal(0))
    event, micro = proof_epsilon_micro([NoisedPart("laplace", Fraction(10), Fraction(1), Fraction(1))], Decimal(0),
                                       listed=False)
    assert event == DiscreteLaplaceEvent(epsilon=Decimal("0.1")) and micro == 100_000


def test_samplers_draw_from_the_csprng_in_the_open_interval():
    u = noise.uniform_open(100_000)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / 100_000)

    class Zeros:  # every byte 0: the smallest uniform, never 0 itself
        def random_bytes(self, count):
            return bytes(count)

    assert noise.uniform_open(3, Zeros())[0] == 0.5 * 2.0 ** -53
    assert np.isfinite(noise.gaussian(5, 1.0, Zeros())).all() and np.isfinite(noise.laplace(5, 1.0, Zeros())).all()
    assert noise.gaussian(7, 1.0).shape == (7,)


def test_clip_l2_only_shrinks():
    assert np.allclose(noise.clip_l2(np.array([3.0, 4.0]), 1.0), [0.6, 0.8])
    assert np.array_equal(noise.clip_l2(np.array([0.3, 0.4]), 1.0), [0.3, 0.4])
