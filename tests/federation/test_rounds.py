"""Aggregation rounds (issue 10): SDK-built exports -> a round -> AggregateWeights, logged and provable; the
minimum count, the strategies' parameters, the z-score option, tampering, the outlier check at the door."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import exports
from federation.models import AggregateRound, Export, LogEntry
from federation.tasks import run_aggregation_round
from privacy.federated import signing, transparency
from privacy.federated.canonical import canonical_bytes
from privacy.federated.priors import BetaPrior
from telemetry.sdk.federation import ExportBuilder, import_priors

pytestmark = pytest.mark.django_db
ROUNDS = "/api/v1/federation/rounds"
DIM = 16


@pytest.fixture(autouse=True)
def log_key(settings):
    settings.LOG_SIGNING_KEY = secrets.token_hex(32)


@pytest.fixture
def admin_api(q):
    _, token = q.user("registrar", "admin")
    return q.client(token)


def contributor(name: str) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    exports.register_contributor(name=name, public_key=key.public_key(), lifetime_epsilon_micro=10**9)
    return key


def builder(key, vector, domain="ranking", **kwargs) -> ExportBuilder:
    options = {"noise_multiplier": 0.5, "clip_norm": 3.0, "observations": 100} | kwargs
    return ExportBuilder(key, domain=domain, **options).add_weights(vector)


def post(q, body):
    return q.client(raise_errors=False).post("/api/v1/federation/exports", body, format="json")


def honest_round(q, count=5, domain="ranking"):
    """``count`` exports of the same centre (norm 2.4, under the clip norm 3), noised with σ = 1.5; their bodies."""
    centre, bodies = np.linspace(-1, 1, DIM), []
    for n in range(count):
        bodies.append(builder(contributor(f"{domain}-{n}-{secrets.token_hex(4)}"), centre, domain)
                      .add_priors({("cold", "b2"): (3.0, 2.0)}).build())
        assert post(q, bodies[-1]).status_code == 201, post(q, bodies[-1]).json()
    return centre, bodies


def test_a_round_aggregates_pending_exports_and_logs_its_own_entry(q, admin_api, settings):
    centre, bodies = honest_round(q)
    response = admin_api.post(ROUNDS, {"domain": "ranking", "strategy": "fedavg"}, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    entry = data["entry"]
    assert entry["kind"] == "aggregate_weights" and entry["round"] == 1 and entry["participation_count"] == 5
    # 5 copies of the centre, each noised with sd 1.5: each coordinate of the mean is within 5 sd / sqrt(5)
    # but with probability 6e-7 (x 16 coordinates)
    assert np.max(np.abs(np.array(entry["weights"]) - centre)) < 5 * 1.5 / np.sqrt(5)
    assert len(entry["confidences"]) == DIM and all(0 <= c <= 1 for c in entry["confidences"])
    assert len(entry["contributions"]) == 5 and entry["dropped"] == []
    # priors pooled: the evidence of the 5 posted (noised) priors adds up
    (prior,) = entry["priors"]
    posted = [segment for body in bodies for segment in body["segments"] if segment["kind"] == "transfer_prior"]
    assert prior["alpha"] == pytest.approx(1 + sum(s["alpha"] - 1 for s in posted))
    assert prior["beta"] == pytest.approx(1 + sum(s["beta"] - 1 for s in posted))
    # the entry is leaf log_index of the signed log, as the public can check
    head = signing.SignedTreeHead.from_json(q.client().get("/api/v1/federation/log/head").json())
    signing.verify_tree_head(head, [signing.load_private_key(settings.LOG_SIGNING_KEY).public_key()])
    path = q.client().get("/api/v1/federation/log/inclusion", {"index": data["log_index"]}).json()["audit_path"]
    assert data["canonical_json"].encode() == canonical_bytes(entry)
    assert transparency.verify_inclusion(transparency.leaf_hash(data["canonical_json"].encode()), data["log_index"],
                                         head.tree_size, [bytes.fromhex(h) for h in path], head.root_hash)
    latest = q.client().get("/api/v1/federation/aggregates/latest", {"domain": "ranking"})
    assert latest.status_code == 200 and latest.json()["id"] == data["id"]
    # every export was taken: a second round has nothing to aggregate
    again = admin_api.post(ROUNDS, {"domain": "ranking"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "insufficient_contributions"


def test_too_few_contributions_is_insufficient_contributions_and_writes_nothing(q, admin_api):
    honest_round(q, count=2)
    response = admin_api.post(ROUNDS, {"domain": "ranking", "min_contributions": 3}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "insufficient_contributions"
    assert not AggregateRound.objects.exists() and LogEntry.objects.count() == 2
    assert not Export.objects.filter(aggregated_in__isnull=False).exists()
    assert q.client().get("/api/v1/federation/aggregates/latest", {"domain": "ranking"}).json()["code"] == \
        "unknown_aggregate"


@pytest.mark.parametrize("body, field", [
    ({"domain": "ranking", "strategy": "nope"}, "strategy"),
    ({"domain": "ranking", "strategy": "trimmed_mean", "parameters": {"beta": 0.5}}, "beta"),
    ({"domain": "ranking", "strategy": "fedprox", "parameters": {"beta": 0.1}}, "beta"),
    ({"domain": "ranking", "min_contributions": 1}, "min_contributions"),
    ({"domain": "ranking", "zscore_filter": -1}, "zscore_filter"),
    ({"domain": ""}, "domain"),
])
def test_bad_round_parameters_are_invalid_round_parameter(admin_api, body, field):
    response = admin_api.post(ROUNDS, body, format="json")
    assert response.status_code == 400 and response.json() | {"field": field} == response.json()
    assert response.json()["code"] == "invalid_round_parameter"


def test_only_admins_run_rounds(q):
    _, token = q.user("reader", "analyst")
    assert q.client(token, raise_errors=False).post(ROUNDS, {"domain": "x"}, format="json").status_code == 403


@pytest.mark.parametrize("strategy, parameters", [
    ("fedprox", {"mu": 0.5}), ("weighted_average", {}), ("median", {}), ("trimmed_mean", {"beta": 0.2}),
    ("norm_bounding", {}), ("multi_krum", {"f": 1}), ("spectral", {}),
])
def test_every_strategy_runs_through_the_api(q, admin_api, strategy, parameters):
    honest_round(q)
    response = admin_api.post(ROUNDS, {"domain": "ranking", "strategy": strategy, "parameters": parameters},
                              format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["entry"]["strategy"] == strategy


def test_the_zscore_option_is_applied_and_recorded(q, admin_api, monkeypatch):
    honest_round(q, count=4)
    # the pre-filter's own behaviour is tested in test_aggregation.py; here: it runs, and what it drops is named
    dropped = []
    monkeypatch.setattr("federation.aggregation.ZScoreNormFilter.keep",
                        lambda self, matrix: dropped.append(self.threshold) or np.arange(1, len(matrix)))
    response = admin_api.post(ROUNDS, {"domain": "ranking", "strategy": "fedavg", "zscore_filter": 2.5},
                              format="json")
    entry = response.json()["entry"]
    first = Export.objects.order_by("id").first().contributor.pseudonym
    assert dropped == [2.5] and entry["zscore_filter"] == 2.5
    assert entry["dropped"] == [first] and entry["participation_count"] == 3


def test_an_edited_logged_export_stops_the_round_with_log_integrity_failed(q, admin_api):
    honest_round(q)
    export = Export.objects.order_by("id").first()
    Export.objects.filter(pk=export.pk).update(canonical_json=export.canonical_json.replace('"observations":100',
                                                                                          '"observations":999'))
    response = admin_api.post(ROUNDS, {"domain": "ranking"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "log_integrity_failed"
    assert not AggregateRound.objects.exists()


def test_a_malformed_export_is_excluded_and_cannot_hold_up_the_rounds(q, admin_api):
    honest_round(q, count=3)
    odd = builder(contributor("odd"), np.ones(DIM + 1)).build()  # another dimension: a Byzantine or a bug
    assert post(q, odd).status_code == 201
    response = admin_api.post(ROUNDS, {"domain": "ranking", "strategy": "fedavg"}, format="json")
    assert response.status_code == 201, response.json()
    entry = response.json()["entry"]
    assert entry["participation_count"] == 3 and len(entry["weights"]) == DIM
    assert entry["excluded"] == [Export.objects.get(contributor__name="odd").digest]
    assert not Export.objects.filter(aggregated_in__isnull=True).exists()  # taken, not offered again


def test_each_contributor_votes_once_with_its_newest_export(q, admin_api):
    honest_round(q, count=3)
    twice = contributor("twice")
    older, newer = (builder(twice, np.zeros(DIM)).build() for _ in range(2))
    assert post(q, older).status_code == 201 and post(q, newer).status_code == 201
    entry = admin_api.post(ROUNDS, {"domain": "ranking", "strategy": "median"}, format="json").json()["entry"]
    digests = dict(Export.objects.filter(contributor__name="twice").order_by("id").values_list("id", "digest"))
    first, second = digests.values()
    assert entry["participation_count"] == 4 and entry["superseded"] == [first] and second in entry["contributions"]


def test_the_celery_task_runs_a_round_or_reports_the_refusal(q):
    assert run_aggregation_round("ranking") == {"domain": "ranking", "code": "insufficient_contributions"}
    honest_round(q)
    result = run_aggregation_round("ranking", strategy="median")
    assert result["round"] == 1 and AggregateRound.objects.get().strategy == "median"


def test_rounds_are_numbered_per_domain(q, admin_api):
    honest_round(q, domain="a")
    honest_round(q, domain="b")
    assert admin_api.post(ROUNDS, {"domain": "a"}, format="json").json()["entry"]["round"] == 1
    honest_round(q, domain="a")
    assert admin_api.post(ROUNDS, {"domain": "a"}, format="json").json()["entry"]["round"] == 2
    assert admin_api.post(ROUNDS, {"domain": "b"}, format="json").json()["entry"]["round"] == 1
    listed = q.client().get(ROUNDS, {"domain": "a"}).json()["rounds"]
    assert [r["entry"]["round"] for r in listed] == [2, 1]


def test_importing_an_aggregate_dampens_its_priors_by_the_version_gap(q, admin_api):
    honest_round(q)
    entry = admin_api.post(ROUNDS, {"domain": "ranking"}, format="json").json()["entry"]
    local = {("cold", "b2"): BetaPrior(2.0, 2.0)}
    same = import_priors(local, entry, local_version=1)[("cold", "b2")]
    older = import_priors(local, entry, local_version=2)[("cold", "b2")]  # one version apart: half the evidence
    pooled = entry["priors"][0]
    assert same.alpha == pytest.approx(2.0 + pooled["alpha"] - 1.0)
    assert older.alpha == pytest.approx(2.0 + (pooled["alpha"] - 1.0) / 2)


# --- the door: weights no clipped, noised update could have (spec ByzantineOutlier) ------------------------


def test_weights_beyond_the_proofs_clip_and_noise_are_byzantine_outlier(q):
    key = contributor("scaler")
    body = builder(key, np.ones(DIM)).build()
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    unsigned["segments"][0]["values"] = [10 * v for v in unsigned["segments"][0]["values"]]  # x10 after clipping
    forged = unsigned | {"signature": signing.sign(key, unsigned).hex()}
    response = post(q, forged)
    assert response.status_code == 400 and response.json()["code"] == "byzantine_outlier"
    assert not Export.objects.exists()


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
def test_honest_noised_weights_pass_the_norm_check(q, mechanism):
    # noise far larger than the clip norm: the check must still pass (its false-alarm rate is e^-40)
    key = contributor("noisy")
    body = ExportBuilder(key, domain="ranking", observations=10, mechanism=mechanism, noise_multiplier=5.0,
                         part_epsilon=0.5, delta=1e-5 if mechanism == "gaussian" else 0,
                         clip_norm=1.0).add_weights(np.ones(1000)).build()
    assert post(q, body).status_code == 201, post(q, body).json()
