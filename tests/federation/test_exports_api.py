"""The export registry server (issue 10): contributors, signed exports and each refusal's code, the ledger
charge (32 parallel exports against one budget), the transparency log's head and proofs, and verify_log."""

from __future__ import annotations

import secrets
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command

from accounting.accountants import PLDAccountant
from accounting.events import GaussianEvent
from accounting.models import LedgerEntry, PartitionCap, PartitionSpend
from federation import exports
from privacy.federated import signing, transparency
from privacy.federated.canonical import canonical_bytes
from federation.models import Contributor, Export, LogEntry, LogNode, TreeHead

pytestmark = pytest.mark.django_db
DELTA = 1e-5
URL = "/api/v1/federation/exports"


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.LOG_SIGNING_KEY = secrets.token_hex(32)


@pytest.fixture
def admin_api(q):
    _, token = q.user("registrar", "admin")
    return q.client(token)


@pytest.fixture
def analyst_api(q):
    _, token = q.user("reader", "analyst")
    return q.client(token)


class Participant:
    def __init__(self, name="alice", epsilon=50):
        self.key = Ed25519PrivateKey.generate()
        self.row = exports.register_contributor(name=name, public_key=self.key.public_key(),
                                                lifetime_epsilon_micro=int(epsilon * 1_000_000))

    def body(self, *, proof=None, segments=None, manifest=None, sign=True) -> dict:
        unsigned = {
            "contributor": self.row.pseudonym,
            "manifest": {"format_version": 1, "domain": "search-ranking", "observations": 120, "quality": 0.9,
                         "created_at": "2026-11-30T12:00:00Z", "nonce": secrets.token_hex(8)} | (manifest or {}),
            "proof": proof or gaussian_proof(),
            "redaction_log": {"counts": {"email": 1}, "content_hash": "ab" * 32, "rules_fired": ["email"],
                              "field_count": 3},
            "segments": segments or [{"kind": "transfer_prior", "bucket": "cold", "arm": "b2",
                                      "alpha": 3.5, "beta": 1.25, "observations": 120},
                                     {"kind": "lora_weights", "values": [0.125, -0.5, 0.25]}],
        }
        return unsigned | {"signature": signing.sign(self.key, unsigned).hex() if sign else "00" * 64}


def gaussian_proof(noise_scale=2.0, sensitivity=1.0, delta=DELTA, epsilon=None) -> dict:
    event = GaussianEvent(noise_multiplier=noise_scale / sensitivity)
    claimed = PLDAccountant(Decimal(repr(delta))).spent_micro([event]) / 1_000_000 if epsilon is None else epsilon
    return {"mechanism": "gaussian", "noise_scale": noise_scale, "sensitivity": sensitivity, "clip_norm": sensitivity,
            "delta": delta, "epsilon": claimed}


def laplace_proof(epsilon=0.1) -> dict:
    # Laplace with scale b = Δ/ε (Dwork & Roth 2014, Thm. 3.6): b = 10 for Δ = 1, ε = 0.1
    return {"mechanism": "laplace", "noise_scale": 1 / epsilon, "sensitivity": 1.0, "clip_norm": 1.0, "delta": 0,
            "epsilon": epsilon}


def post(q, body, **kwargs):
    return q.client(raise_errors=False, **kwargs).post(URL, body, format="json")


def nothing_written():
    return not Export.objects.exists() and not LogEntry.objects.exists() and not LedgerEntry.objects.exists()


def server_public_key(settings):
    return signing.load_private_key(settings.LOG_SIGNING_KEY).public_key()


# --- contributors ------------------------------------------------------------------------------------


def test_admins_register_list_and_deactivate_contributors(admin_api, analyst_api):
    key = Ed25519PrivateKey.generate().public_key()
    response = admin_api.post("/api/v1/federation/contributors",
                              {"name": "lab-1", "public_key": signing.public_key_bytes(key).hex(),
                               "lifetime_epsilon": "2.5"}, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["pseudonym"] == signing.contributor_pseudonym(key) and data["lifetime_epsilon"] == 2.5
    assert data["active"] is True and data["epsilon_spent"] == 0
    assert PartitionCap.objects.get(scope=f"contributor:{data['id']}").lifetime_epsilon_micro == 2_500_000
    assert [row["name"] for row in admin_api.get("/api/v1/federation/contributors").json()["contributors"]] == ["lab-1"]
    assert analyst_api.get("/api/v1/federation/contributors").status_code == 403
    off = admin_api.post(f"/api/v1/federation/contributors/{data['id']}/deactivate")
    assert off.status_code == 200 and off.json()["active"] is False
    assert admin_api.post("/api/v1/federation/contributors/999/deactivate").json()["code"] == "unknown_contributor"


@pytest.mark.parametrize("public_key", ["00" * 31, "zz" * 32, "not a key", 42])
def test_a_bad_public_key_is_invalid_public_key(admin_api, public_key):
    response = admin_api.post("/api/v1/federation/contributors",
                              {"name": "x", "public_key": public_key, "lifetime_epsilon": 1}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_public_key"
    assert not Contributor.objects.exists()


def test_a_second_registration_of_a_key_is_contributor_exists(admin_api):
    key = signing.public_key_bytes(Ed25519PrivateKey.generate().public_key()).hex()
    admin_api.post("/api/v1/federation/contributors", {"name": "a", "public_key": key, "lifetime_epsilon": 1},
                   format="json")
    again = admin_api.post("/api/v1/federation/contributors", {"name": "b", "public_key": key, "lifetime_epsilon": 1},
                           format="json")
    assert again.status_code == 409 and again.json()["code"] == "contributor_exists"


def test_register_contributor_command_takes_hex_or_a_pem_file(tmp_path, capsys):
    first = Ed25519PrivateKey.generate().public_key()
    call_command("register_contributor", "hexed", "--public-key", signing.public_key_bytes(first).hex(),
                 "--epsilon", "3")
    pem = tmp_path / "key.pem"
    second = Ed25519PrivateKey.generate().public_key()
    pem.write_bytes(second.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    call_command("register_contributor", "pemmed", "--public-key", str(pem), "--epsilon", "1.5")
    assert signing.contributor_pseudonym(second) in capsys.readouterr().out
    assert dict(Contributor.objects.values_list("name", "pseudonym")) == {
        "hexed": signing.contributor_pseudonym(first), "pemmed": signing.contributor_pseudonym(second)}
    with pytest.raises(CommandError, match="invalid_public_key"):
        call_command("register_contributor", "bad", "--public-key", "abcd", "--epsilon", "1")


# --- accepting an export -----------------------------------------------------------------------------


def test_a_valid_export_is_accepted_charged_and_provably_logged(q, settings, analyst_api):
    alice = Participant()
    body = alice.body()
    response = post(q, body)
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["log_index"] == 0 and data["contributor"] == alice.row.pseudonym
    assert data["epsilon"] == body["proof"]["epsilon"] and data["delta"] == DELTA
    assert data["proof"] == body["proof"] and data["redaction_log"] == body["redaction_log"]
    # charged on the contributor's partition, at the ledger's δ (settings.PRIVACY["APPROXIMATE_DELTA"])
    ledger_delta = Decimal(settings.PRIVACY["APPROXIMATE_DELTA"])
    expected = PLDAccountant(ledger_delta).spent_micro([GaussianEvent(2.0)])
    assert PartitionSpend.objects.get(scope=alice.row.scope).spent_micro == expected == \
        Export.objects.get().epsilon_charged_micro
    assert LedgerEntry.objects.get().spender == alice.row.scope

    head = signing.SignedTreeHead.from_json(q.client().get("/api/v1/federation/log/head").json())
    signing.verify_tree_head(head, [server_public_key(settings)])
    proof = q.client().get("/api/v1/federation/log/inclusion", {"index": 0, "size": head.tree_size}).json()
    leaf = transparency.leaf_hash(canonical_bytes(body))  # the entry is the whole posted body, canonical
    assert transparency.verify_inclusion(leaf, 0, head.tree_size, [bytes.fromhex(h) for h in proof["audit_path"]],
                                         head.root_hash)
    assert analyst_api.get(f"/api/v1/federation/exports/{data['id']}").json()["signature"] == body["signature"]
    assert [row["id"] for row in analyst_api.get(URL).json()["exports"]] == [data["id"]]


def test_inclusion_and_consistency_proofs_verify_across_heads(q, settings):
    alice = Participant()
    bodies = [alice.body() for _ in range(5)]
    assert post(q, bodies[0]).status_code == 201
    old = signing.SignedTreeHead.from_json(q.client().get("/api/v1/federation/log/head").json())
    for body in bodies[1:]:
        assert post(q, body).status_code == 201
    new = signing.SignedTreeHead.from_json(q.client().get("/api/v1/federation/log/head").json())
    for head in (old, new):
        signing.verify_tree_head(head, [server_public_key(settings)])
    assert (old.tree_size, new.tree_size) == (1, 5)
    path = q.client().get("/api/v1/federation/log/consistency", {"old": 1, "new": 5}).json()["proof"]
    assert transparency.verify_consistency(1, 5, old.root_hash, new.root_hash, [bytes.fromhex(h) for h in path])
    for index, body in enumerate(bodies):
        audit = q.client().get("/api/v1/federation/log/inclusion", {"index": index}).json()["audit_path"]
        assert transparency.verify_inclusion(transparency.leaf_hash(canonical_bytes(body)), index, 5,
                                             [bytes.fromhex(h) for h in audit], new.root_hash)
    assert TreeHead.objects.count() == 2  # one stored head per size served
    bad = q.client().get("/api/v1/federation/log/inclusion", {"index": 5})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_log_range"


def test_a_forged_signature_is_invalid_signature(q):
    alice, mallory = Participant(), Ed25519PrivateKey.generate()
    body = alice.body()
    body["signature"] = signing.sign(mallory, {k: v for k, v in body.items() if k != "signature"}).hex()
    response = post(q, body)
    assert response.status_code == 401 and response.json()["code"] == "invalid_signature"
    assert nothing_written()


@pytest.mark.parametrize("edit", [
    lambda body: body["proof"].update(noise_scale=4.0),
    lambda body: body["manifest"].update(observations=121),
    lambda body: body["segments"][1]["values"].append(1.0),
    lambda body: body["redaction_log"]["counts"].pop("email"),
])
def test_edited_canonical_bytes_are_invalid_signature(q, edit):
    body = Participant().body()
    edit(body)
    response = post(q, body)
    assert response.status_code == 401 and response.json()["code"] == "invalid_signature"
    assert nothing_written()


def test_an_unknown_or_deactivated_contributor_is_unknown_contributor(q):
    alice = Participant()
    stranger = alice.body()
    stranger["contributor"] = "ff" * 32
    assert post(q, stranger).json()["code"] == "unknown_contributor"
    exports.deactivate_contributor(contributor=alice.row)
    response = post(q, alice.body())
    assert response.status_code == 401 and response.json()["code"] == "unknown_contributor"
    assert nothing_written()


@pytest.mark.parametrize("where", ["segment", "manifest", "key"])
def test_pii_in_any_string_is_pii_leak(q, where):
    alice = Participant()
    if where == "segment":
        body = alice.body(segments=[{"kind": "policy_kernel", "note": "ask alice.smith@example.com"}])
    elif where == "manifest":
        body = alice.body(manifest={"source": "/home/alice/projects/ranker/config.yaml"})
    else:
        body = alice.body(segments=[{"kind": "cost_curve", "sk-proj-Xy7Qp2Lm9Rt4Vw8Zb3Nc6Kd1": 1}])
    response = post(q, body)
    assert response.status_code == 400 and response.json()["code"] == "pii_leak", response.json()
    assert "example.com" not in response.content.decode() and "alice" not in response.content.decode()
    assert nothing_written()


@pytest.mark.parametrize("proof, code", [
    (gaussian_proof(epsilon=0.5), "proof_mismatch"),  # the parameters give about 2.4, not 0.5
    (laplace_proof() | {"epsilon": 0.05}, "proof_mismatch"),
    (gaussian_proof() | {"sensitivity": 0.5}, "proof_mismatch"),  # sensitivity below the clip norm
    (gaussian_proof() | {"mechanism": "exponential"}, "proof_mismatch"),
    (gaussian_proof() | {"delta": 0.5}, "invalid_delta"),
    (gaussian_proof() | {"delta": 0}, "invalid_delta"),
    (gaussian_proof() | {"epsilon": -1}, "invalid_epsilon"),  # spec InvalidEpsilon
    (gaussian_proof(noise_scale=0.1), "invalid_epsilon"),  # σ/Δ below 0.3: refused before any PLD is built
    (laplace_proof() | {"noise_scale": 0.001}, "invalid_epsilon"),  # Laplace ε = 1000
])
def test_a_proof_the_server_does_not_reproduce_is_refused(q, proof, code):
    response = post(q, Participant().body(proof=proof))
    assert response.status_code == 400 and response.json()["code"] == code, response.json()
    assert nothing_written()


def test_a_body_without_a_canonical_form_is_serialization_error(q):
    body = Participant().body(segments=[{"kind": "counter", "value": 2**60}], sign=False)  # beyond ±2^53
    response = post(q, body)
    assert response.status_code == 400 and response.json()["code"] == "serialization_error"
    assert nothing_written()


def test_a_composed_proof_is_recomputed_over_its_parts(q):
    alice = Participant()
    parts = [gaussian_proof(), laplace_proof(0.25)]  # Laplace ε = Δ/b = 0.25
    wrong = post(q, alice.body(proof={"parts": parts, "delta": DELTA, "epsilon": 1.0})).json()
    assert wrong["code"] == "proof_mismatch"
    # composing with the Laplace part costs something, and (PLD) no more than the sum of the parts' ε
    assert gaussian_proof()["epsilon"] < wrong["epsilon_computed"] <= gaussian_proof()["epsilon"] + 0.25
    accepted = post(q, alice.body(proof={"parts": parts, "delta": DELTA, "epsilon": wrong["epsilon_computed"]}))
    assert accepted.status_code == 201, accepted.json()


# --- replay, policy, budget ------------------------------------------------------------------------


def test_a_replayed_export_is_duplicate_export_and_changes_nothing(q):
    body = Participant().body()
    assert post(q, body).status_code == 201
    counts = (Export.objects.count(), LogEntry.objects.count(), LedgerEntry.objects.count(), LogNode.objects.count())
    replay = post(q, body)
    assert replay.status_code == 409 and replay.json()["code"] == "duplicate_export"
    assert counts == (Export.objects.count(), LogEntry.objects.count(), LedgerEntry.objects.count(),
                      LogNode.objects.count())


@pytest.mark.parametrize("policy, body_args, code, status", [
    ({"denied_segment_kinds": ["lora_weights"]}, {}, "segment_denied", 403),
    ({"allowed_segment_kinds": ["transfer_prior"]}, {}, "segment_denied", 403),
    ({"allowed_domains": ["code-review"]}, {}, "domain_denied", 403),
    ({"min_observations": 500}, {}, "insufficient_observations", 403),
    ({"min_quality": 0.95}, {}, "quality_below_threshold", 403),
])
def test_policy_denials_have_their_codes_and_write_nothing(q, settings, policy, body_args, code, status):
    settings.FEDERATION_POLICY = policy
    response = post(q, Participant().body(**body_args))
    assert response.status_code == status and response.json()["code"] == code, response.json()
    assert nothing_written()


def test_the_rate_limit_counts_a_contributors_exports_of_the_last_day(q, settings):
    settings.FEDERATION_POLICY = {"max_exports_per_day": 2}
    alice, bob = Participant("alice"), Participant("bob")
    assert [post(q, alice.body()).status_code for _ in range(2)] == [201, 201]
    third = post(q, alice.body())
    assert third.status_code == 429 and third.json()["code"] == "rate_limited"
    assert post(q, bob.body()).status_code == 201  # per contributor
    assert Export.objects.filter(contributor=alice.row).count() == 2


def test_an_export_over_the_contributors_budget_is_refused(q):
    alice = Participant(epsilon=0.15)
    assert post(q, alice.body(proof=laplace_proof(0.1))).status_code == 201
    over = post(q, alice.body(proof=laplace_proof(0.1)))
    assert over.status_code == 403 and over.json()["code"] == "partition_cap_reached"
    assert Export.objects.count() == LogEntry.objects.count() == LedgerEntry.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_32_parallel_exports_never_overshoot_one_budget(q):
    alice = Participant(epsilon=1)  # ten exports of ε = 0.1 (pure Laplace: charged exactly 0.1 each)
    bodies = [alice.body(proof=laplace_proof(0.1)) for _ in range(32)]
    statuses = q.run_threads(32, lambda i: post(q, bodies[i]).json().get("code", "accepted"))
    assert statuses.count("accepted") == 10 and statuses.count("partition_cap_reached") == 22, statuses
    assert PartitionSpend.objects.get(scope=alice.row.scope).spent_micro == 1_000_000
    assert sorted(LogEntry.objects.values_list("index", flat=True)) == list(range(10))
    q.client().get("/api/v1/federation/log/head")
    call_command("verify_log")


# --- verify_log ------------------------------------------------------------------------------------


@pytest.fixture
def logged(q):
    alice = Participant()
    for _ in range(4):
        assert post(q, alice.body()).status_code == 201
    q.client().get("/api/v1/federation/log/head")
    call_command("verify_log")


def test_verify_log_catches_an_edited_entry(logged):
    row = LogEntry.objects.get(index=1)
    LogEntry.objects.filter(pk=row.pk).update(entry=bytes(row.entry).replace(b"search-ranking", b"search-rankinh"))
    with pytest.raises(CommandError, match="edited"):
        call_command("verify_log")


def test_verify_log_catches_a_reordering(logged):
    first, second = LogEntry.objects.get(index=0), LogEntry.objects.get(index=1)
    LogEntry.objects.filter(pk=first.pk).update(entry=bytes(second.entry))
    LogEntry.objects.filter(pk=second.pk).update(entry=bytes(first.entry))
    with pytest.raises(CommandError, match="reordered"):
        call_command("verify_log")


def test_verify_log_catches_a_truncation(logged):
    LogNode.objects.filter(level=0, index=3).delete()
    LogEntry.objects.filter(index=3).delete()
    with pytest.raises(CommandError, match="truncated"):
        call_command("verify_log")


def test_verify_log_refuses_a_head_signed_by_another_key(logged, settings):
    settings.LOG_SIGNING_KEY = secrets.token_hex(32)  # the heads stored were signed by the old key
    with pytest.raises(CommandError):
        call_command("verify_log")
