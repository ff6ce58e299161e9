"""Auth for every endpoint, and the metric catalog / ingest key / user admin API."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from rest_framework.test import APIClient

from privacy.ldp import make_oracle
from privacy.ldp.longitudinal import MemoizedOracle, guarantees
from telemetry import services
from deploy.api.auth import hash_key
from telemetry.catalog import catalog
from deploy.api.errors import ApiError
from telemetry.models import IngestKey, Metric
from telemetry.rollup import advance_rollup
from telemetry.selectors import observed_counts

from helpers import day_str, envelope, item_codes, krr_item, post_batch, staged_reports, today, token_for

METRIC_BODY = {"name": "newmetric", "domain": ["x", "y"], "epsilon": 1.0, "protocol": "krr"}


def client_for(credential: str | None) -> APIClient:
    api = APIClient(raise_request_exception=False)
    if credential:
        api.credentials(HTTP_AUTHORIZATION=credential)
    return api


@pytest.fixture
def principals(key, analyst_token, admin_token):
    return {
        "anonymous": None,
        "ingest": f"Api-Key {key}",
        "analyst": f"Token {analyst_token}",
        "admin": f"Token {admin_token}",
    }


# --------------------------------------------------------------------------- permission matrix

# endpoint -> principal allowed?
ENDPOINTS = ["GET metrics", "POST metrics", "PUT metric", "GET ingest-keys", "POST ingest-keys",
             "DELETE ingest-key", "POST users", "POST reports"]
ALLOWED = {
    "anonymous": set(),
    "ingest": {"GET metrics", "POST reports"},
    "analyst": {"GET metrics"},
    "admin": set(ENDPOINTS) - {"POST reports"},
}


def _call(api: APIClient, endpoint: str, victim_key_id: int, n: int):
    if endpoint == "GET metrics":
        return api.get("/api/v1/metrics")
    if endpoint == "POST metrics":
        return api.post("/api/v1/metrics", dict(METRIC_BODY, name=f"created{n}"), format="json")
    if endpoint == "PUT metric":
        return api.put("/api/v1/metrics/color", {"epsilon": 1.5}, format="json")
    if endpoint == "GET ingest-keys":
        return api.get("/api/v1/ingest-keys")
    if endpoint == "POST ingest-keys":
        return api.post("/api/v1/ingest-keys", {"app": f"app{n}"}, format="json")
    if endpoint == "DELETE ingest-key":
        return api.delete(f"/api/v1/ingest-keys/{victim_key_id}")
    if endpoint == "POST users":
        return api.post("/api/v1/users", {"username": f"user{n}", "role": "analyst"}, format="json")
    if endpoint == "POST reports":
        return api.post("/api/v1/reports", envelope([krr_item()], client_id=f"c{n}"), format="json")
    raise AssertionError(endpoint)


def _state():
    return (
        list(Metric.objects.values_list("name", "version", "epsilon").order_by("name", "version")),
        list(IngestKey.objects.values_list("id", "revoked_at").order_by("id")),
        get_user_model().objects.count(),
        len(staged_reports()),
    )


@pytest.mark.parametrize("principal", ["anonymous", "ingest", "analyst", "admin"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_permission_matrix(color, principals, principal, endpoint):
    victim, _ = services.create_ingest_key(app="victim")
    before = _state()
    response = _call(client_for(principals[principal]), endpoint, victim.id, 1)
    body = response.json()
    if endpoint in ALLOWED[principal]:
        created = endpoint.startswith("POST") and endpoint != "POST reports"
        assert response.status_code == (201 if created else 200), (response.status_code, body)
    else:
        expected = {401} if principal == "anonymous" else {401, 403}
        if principal in ("analyst", "admin") and endpoint != "POST reports":
            expected = {403}  # authenticated, but not allowed
        assert response.status_code in expected, (response.status_code, body)
        assert isinstance(body.get("code"), str) and body["code"], body
        assert body.get("message")
        assert _state() == before, "a denied request changed something"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_missing_credentials_are_401(color, endpoint):
    response = _call(client_for(None), endpoint, 1, 1)
    assert response.status_code == 401
    code = response.json()["code"]
    assert code == ("missing_api_key" if endpoint == "POST reports" else "not_authenticated")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("credential", ["Api-Key ik_not-a-real-key", "Token 0123456789abcdef0123456789abcdef01234567"])
def test_wrong_credentials_are_401(color, endpoint, credential):
    before = _state()
    response = _call(client_for(credential), endpoint, 1, 1)
    assert response.status_code == 401, response.content
    code = response.json()["code"]
    if endpoint == "POST reports":
        assert code == ("invalid_api_key" if credential.startswith("Api-Key") else "missing_api_key")
    elif credential.startswith("Api-Key") and not endpoint.endswith(" metrics"):
        assert code == "wrong_credential_type"  # an endpoint for people says so, whatever the key
    else:
        assert code == "authentication_failed"
    assert _state() == before


def test_reports_auth_codes(color, key):
    assert post_batch(envelope([krr_item()]), None).json()["code"] == "missing_api_key"
    assert post_batch(envelope([krr_item()]), "").status_code == 401  # "Api-Key " with nothing after it
    assert post_batch(envelope([krr_item()]), "wrong").json()["code"] == "invalid_api_key"
    assert post_batch(envelope([krr_item()]), key[:-1]).json()["code"] == "invalid_api_key"
    assert len(staged_reports()) == 0
    assert post_batch(envelope([krr_item()]), key).status_code == 200


def test_revoked_ingest_key_stops_working_everywhere(color, key, ingest_key, admin_token):
    assert post_batch(envelope([krr_item()], client_id="a"), key).status_code == 200
    assert client_for(f"Api-Key {key}").get("/api/v1/metrics").status_code == 200
    response = client_for(f"Token {admin_token}").delete(f"/api/v1/ingest-keys/{ingest_key[0].id}")
    assert response.status_code == 200 and response.json()["revoked_at"]
    revoked = post_batch(envelope([krr_item()], client_id="b"), key)
    assert revoked.status_code == 401 and revoked.json()["code"] == "invalid_api_key"
    assert client_for(f"Api-Key {key}").get("/api/v1/metrics").status_code == 401
    assert len(staged_reports()) == 1
    # revoking twice is harmless; an unknown id is a 404 with a code
    assert client_for(f"Token {admin_token}").delete(f"/api/v1/ingest-keys/{ingest_key[0].id}").status_code == 200
    missing = client_for(f"Token {admin_token}").delete("/api/v1/ingest-keys/999999")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_ingest_key"


def test_user_without_role_is_forbidden(color):
    user = get_user_model().objects.create_user(username="norole")
    response = client_for(f"Token {token_for(user)}").get("/api/v1/metrics")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"


def test_ingest_key_listing_never_shows_keys(key, admin_token):
    listing = client_for(f"Token {admin_token}").get("/api/v1/ingest-keys").json()["ingest_keys"]
    assert len(listing) == 1
    assert key not in str(listing) and hash_key(key) not in str(listing)
    assert listing[0]["prefix"] == key[:10]


def test_admin_creates_ingest_key_that_works(color, admin_token):
    response = client_for(f"Token {admin_token}").post("/api/v1/ingest-keys", {"app": "web"}, format="json")
    assert response.status_code == 201
    plaintext = response.json()["key"]
    stored = IngestKey.objects.get(pk=response.json()["id"])
    assert stored.key_hash == hash_key(plaintext) and plaintext not in (stored.key_hash, stored.prefix)
    assert item_codes(post_batch(envelope([krr_item()]), plaintext)) == ["accepted"]
    bad = client_for(f"Token {admin_token}").post("/api/v1/ingest-keys", {"app": "  "}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_app"


def test_admin_creates_users_with_working_tokens(admin_token):
    admin = client_for(f"Token {admin_token}")
    response = admin.post("/api/v1/users", {"username": "carol", "role": "analyst"}, format="json")
    assert response.status_code == 201
    token = response.json()["token"]
    assert client_for(f"Token {token}").get("/api/v1/metrics").status_code == 200
    assert client_for(f"Token {token}").post("/api/v1/metrics", METRIC_BODY, format="json").status_code == 403
    duplicate = admin.post("/api/v1/users", {"username": "carol", "role": "analyst"}, format="json")
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "user_exists"
    bad_role = admin.post("/api/v1/users", {"username": "dave", "role": "root"}, format="json")
    assert bad_role.status_code == 400 and bad_role.json()["code"] == "invalid_role"
    bad_name = admin.post("/api/v1/users", {"username": "has space", "role": "admin"}, format="json")
    assert bad_name.status_code == 400 and bad_name.json()["code"] == "invalid_username"
    new_admin = admin.post("/api/v1/users", {"username": "erin", "role": "admin"}, format="json").json()["token"]
    assert client_for(f"Token {new_admin}").post("/api/v1/metrics", METRIC_BODY, format="json").status_code == 201


# --------------------------------------------------------------------------- metric creation


@pytest.fixture
def admin_api(admin_token) -> APIClient:
    return client_for(f"Token {admin_token}")


def test_create_metric(admin_api):
    response = admin_api.post("/api/v1/metrics", {**METRIC_BODY, "contribution_bound": 3, "description": "d"},
                              format="json")
    assert response.status_code == 201
    body = response.json()
    longitudinal = body.pop("longitudinal")
    assert body == {"name": "newmetric", "version": 1, "description": "d", "domain": ["x", "y"],
                    "epsilon": 1.0, "report_epsilon": 0.5, "protocol": "krr", "contribution_bound": 3}
    expected = guarantees("krr", 2, 1.0, 0.5)
    assert longitudinal == {"keep_probability": expected.keep, "per_value_epsilon": 1.0,
                            "per_report_epsilon": expected.per_report, "per_change_epsilon": expected.per_change}
    assert longitudinal["per_report_epsilon"] == pytest.approx(0.5)
    listed = admin_api.get("/api/v1/metrics").json()["metrics"]
    assert [m["name"] for m in listed] == ["newmetric"]


def test_metric_catalog_tells_clients_what_ingest_accepts(admin_api, key, settings):
    settings.PRIVACY = {**settings.PRIVACY, "REGIONS": ["US", "DE"], "REPORT_MAX_AGE_DAYS": 5}
    body = client_for(f"Api-Key {key}").get("/api/v1/metrics").json()
    assert body["regions"] == ["DE", "US"]
    assert body["report_max_age_days"] == 5


def test_report_epsilon_sets_the_servers_composed_channel(admin_api):
    created = admin_api.post("/api/v1/metrics", {**METRIC_BODY, "epsilon": "2", "report_epsilon": "1.5"},
                             format="json").json()
    assert (created["epsilon"], created["report_epsilon"]) == (2.0, 1.5)
    spec = catalog.lookup("newmetric")
    assert spec.report_epsilon == 1.5
    assert isinstance(spec.oracle, MemoizedOracle) and spec.oracle.keep == created["longitudinal"]["keep_probability"]
    assert spec.oracle.report_epsilon == pytest.approx(1.5)
    base = make_oracle("krr", 2, 2.0)
    assert spec.oracle.p == pytest.approx(spec.oracle.keep * base.p + (1 - spec.oracle.keep) / 2)
    assert spec.oracle.q == pytest.approx(spec.oracle.keep * base.q + (1 - spec.oracle.keep) / 2)


def test_memo_only_metric_keeps_the_base_channel(admin_api):
    created = admin_api.post("/api/v1/metrics", {**METRIC_BODY, "report_epsilon": 1.0}, format="json").json()
    assert created["longitudinal"]["keep_probability"] == 1.0
    assert created["longitudinal"]["per_change_epsilon"] is None  # not bounded: every report is the memo
    assert catalog.lookup("newmetric").oracle == make_oracle("krr", 2, 1.0)
    legacy = Metric.objects.create(name="legacy", domain=["a", "b"], epsilon=1.0, protocol="krr")
    assert legacy.report_epsilon == 1.0


def test_create_metric_defaults_and_auto_protocol(admin_api):
    small = admin_api.post("/api/v1/metrics", {"name": "small", "domain": ["a", "b", "c"]}, format="json").json()
    assert (small["epsilon"], small["contribution_bound"], small["protocol"]) == (2.0, 1, "krr")
    labels = [f"v{i}" for i in range(20)]
    large = admin_api.post("/api/v1/metrics", {"name": "large", "domain": labels, "protocol": "auto"},
                           format="json").json()
    assert large["protocol"] == "ss"  # k = 20, eps = 2, report eps 1: subset selection has the least variance
    assert (small["report_epsilon"], large["report_epsilon"]) == (1.0, 1.0)  # half of epsilon by default


INVALID_METRICS = [
    ({"name": "Bad Name"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "-leading"}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"name": 5}, "name"),
    ({"name": None}, "name"),
    ({"domain": ["a", "a"]}, "domain"),
    ({"domain": ["a"]}, "domain"),
    ({"domain": "a,b"}, "domain"),
    ({"domain": ["a", ""]}, "domain"),
    ({"domain": ["a", 2]}, "domain"),
    ({"domain": None}, "domain"),
    ({"epsilon": 0}, "epsilon"),
    ({"epsilon": -1}, "epsilon"),
    ({"epsilon": "two"}, "epsilon"),
    ({"epsilon": "NaN"}, "epsilon"),
    ({"epsilon": None}, "epsilon"),
    ({"epsilon": "21"}, "epsilon"),
    ({"epsilon": True}, "epsilon"),
    ({"epsilon": 21}, "epsilon"),
    ({"protocol": "rappor"}, "protocol"),
    ({"protocol": "KRR"}, "protocol"),
    ({"protocol": ["krr"]}, "protocol"),
    ({"contribution_bound": 0}, "contribution_bound"),
    ({"contribution_bound": -1}, "contribution_bound"),
    ({"contribution_bound": 101}, "contribution_bound"),
    ({"contribution_bound": 1.5}, "contribution_bound"),
    ({"contribution_bound": "2"}, "contribution_bound"),
    ({"contribution_bound": True}, "contribution_bound"),
    ({"report_epsilon": 0}, "report_epsilon"),
    ({"report_epsilon": 1.01}, "report_epsilon"),
    ({"report_epsilon": "half"}, "report_epsilon"),
    ({"report_epsilon": None}, "report_epsilon"),
    ({"report_epsilon": True}, "report_epsilon"),
    ({"epsilon": 3, "report_epsilon": 3.5}, "report_epsilon"),
]


@pytest.mark.parametrize("override,field", INVALID_METRICS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID_METRICS)])
def test_create_metric_validation(admin_api, override, field):
    response = admin_api.post("/api/v1/metrics", {**METRIC_BODY, **override}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_metric"
    assert response.json()["field"] == field
    assert Metric.objects.count() == 0


def test_create_metric_longest_name_is_accepted(admin_api):
    response = admin_api.post("/api/v1/metrics", {**METRIC_BODY, "name": "a" * 64}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize("raw,code", [(b"[1, 2]", "invalid_body"), (b"{oops", "malformed_json"),
                                      (b'"name"', "invalid_body")])
def test_create_metric_bad_body(admin_api, raw, code):
    response = admin_api.post("/api/v1/metrics", raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_duplicate_metric_name_is_409(admin_api, color):
    response = admin_api.post("/api/v1/metrics", {**METRIC_BODY, "name": "color"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "metric_exists"
    assert Metric.objects.filter(name="color").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_creation_of_one_name_gives_one_metric_and_409s():
    errors, codes = [], []
    barrier = threading.Barrier(8)

    def create():
        try:
            barrier.wait()
            services.create_metric(name="raced", domain=["a", "b"], protocol="krr")
            codes.append("created")
        except ApiError as error:
            codes.append(error.code)
        except BaseException as error:  # noqa: BLE001
            errors.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert Metric.objects.filter(name="raced").count() == 1
    assert not errors, errors
    assert sorted(codes) == ["created"] + ["metric_exists"] * 7


# --------------------------------------------------------------------------- metric changes and versions


def test_change_without_reports_still_makes_a_new_version(admin_api, color):
    """Versions are immutable, so a stale catalog elsewhere can never store reports under a changed one."""
    response = admin_api.put("/api/v1/metrics/color", {"epsilon": 1.25, "contribution_bound": 4,
                                                       "domain": ["red", "green", "blue", "black"]}, format="json")
    assert response.status_code == 200
    assert response.json()["version"] == 2
    v1, v2 = Metric.objects.get(name="color", version=1), Metric.objects.get(name="color", version=2)
    assert (v1.id, v1.epsilon, v1.k) == (color.id, color.epsilon, 3)
    assert (v2.epsilon, v2.contribution_bound, v2.k) == (1.25, 4, 4)
    assert catalog.lookup("color").epsilon == 1.25  # the hot-path cache sees it


def test_report_epsilon_changes(admin_api, color):
    assert color.report_epsilon == 1.0
    changed = admin_api.put("/api/v1/metrics/color", {"report_epsilon": 0.5}, format="json").json()
    assert (changed["version"], changed["epsilon"], changed["report_epsilon"]) == (2, 2.0, 0.5)
    # A new ε without a report_epsilon gets the default, half of it; other changes keep it.
    changed = admin_api.put("/api/v1/metrics/color", {"epsilon": 3}, format="json").json()
    assert (changed["version"], changed["report_epsilon"]) == (3, 1.5)
    changed = admin_api.put("/api/v1/metrics/color", {"contribution_bound": 2}, format="json").json()
    assert (changed["version"], changed["report_epsilon"]) == (4, 1.5)
    refused = admin_api.put("/api/v1/metrics/color", {"epsilon": 1, "report_epsilon": 1.5}, format="json")
    assert refused.status_code == 400 and refused.json()["field"] == "report_epsilon"


@pytest.mark.django_db(transaction=True)
def test_migration_gives_existing_metrics_their_memo_only_channel():
    """0005: reports stored before it were memoized answers (λ = 1), so report_epsilon = epsilon."""
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    executor.migrate([("telemetry", "0004_ingest_hot_path")])
    try:
        executor.loader.build_graph()
        old = executor.loader.project_state([("telemetry", "0004_ingest_hot_path")]).apps
        old.get_model("telemetry", "Metric").objects.create(name="old", version=1, domain=["a", "b"],
                                                            epsilon=1.5, protocol="krr", contribution_bound=1)
        executor.loader.build_graph()
        executor.migrate([("telemetry", "0006_metric_report_epsilon")])
    finally:
        executor.loader.build_graph()
        executor.migrate(leaves)
    assert Metric.objects.get(name="old").report_epsilon == 1.5


def test_description_only_change_is_in_place(admin_api, color):
    response = admin_api.put("/api/v1/metrics/color", {"description": "favourite colour"}, format="json")
    assert response.status_code == 200 and response.json()["version"] == 1
    assert Metric.objects.get(name="color").description == "favourite colour"


def test_change_with_reports_makes_version_two(admin_api, key, color):
    assert item_codes(post_batch(envelope([krr_item(value="red")], client_id="c1"), key)) == ["accepted"]
    response = admin_api.put("/api/v1/metrics/color", {"domain": ["red", "green", "blue", "white"]}, format="json")
    assert response.status_code == 200
    assert response.json()["version"] == 2
    v1 = Metric.objects.get(name="color", version=1)
    assert v1.domain == ["red", "green", "blue"] and v1.epsilon == color.epsilon
    assert [m["version"] for m in admin_api.get("/api/v1/metrics").json()["metrics"]] == [2]

    # a report without version goes to v2; one naming version 1 goes to v1; v3 does not exist
    body = envelope([krr_item(value="white"), krr_item(value="green", version=1, day=day_str(-1)),
                     krr_item(value="red", version=3), krr_item(value="white", version=1, day=day_str(-2))],
                    client_id="c2")
    assert item_codes(post_batch(body, key)) == ["accepted", "accepted", "unknown_metric_version",
                                                 "value_out_of_domain"]
    advance_rollup()
    spec1, spec2 = catalog.lookup("color", 1), catalog.lookup("color", 2)
    start = today() - timedelta(days=7)
    old = observed_counts(spec1, start, today())
    new = observed_counts(spec2, start, today())
    assert old[0].reports == 2 and old[0].support.tolist() == [1, 1, 0]
    assert new[0].reports == 1 and new[0].support.tolist() == [0, 0, 0, 1]

    # v2 now has a report too, so a further change makes v3
    again = admin_api.put("/api/v1/metrics/color", {"epsilon": 1.0}, format="json")
    assert again.json()["version"] == 3
    assert Metric.objects.get(name="color", version=2).epsilon == color.epsilon


def test_each_definition_change_makes_the_next_version(admin_api, key, color):
    post_batch(envelope([krr_item()], client_id="c"), key)
    assert admin_api.put("/api/v1/metrics/color", {"epsilon": 1.0}, format="json").json()["version"] == 2
    assert admin_api.put("/api/v1/metrics/color", {"epsilon": 0.5}, format="json").json()["version"] == 3
    assert admin_api.put("/api/v1/metrics/color", {"epsilon": 0.5}, format="json").json()["version"] == 3  # no change
    assert Metric.objects.filter(name="color").count() == 3


@pytest.mark.parametrize("change,field", [({"epsilon": 0}, "epsilon"), ({"domain": ["a"]}, "domain"),
                                          ({"contribution_bound": 0}, "contribution_bound"),
                                          ({"protocol": "nope"}, "protocol"), ({"colour": 1}, "colour"),
                                          ({"version": 5}, "version")])
def test_change_validation(admin_api, color, change, field):
    response = admin_api.put("/api/v1/metrics/color", change, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_metric" and response.json()["field"] == field
    assert Metric.objects.get(name="color").epsilon == color.epsilon


def test_change_body_naming_the_metric_is_a_400_not_a_500(admin_api, color):
    """PUT /metrics/color with {"name": ...} in the body: a clean 4xx, never a server error."""
    response = admin_api.put("/api/v1/metrics/color", {"name": "other", "epsilon": 1.0}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_metric"
    assert list(Metric.objects.values_list("name", "epsilon")) == [("color", color.epsilon)]


def test_change_unknown_metric_is_404(admin_api):
    response = admin_api.put("/api/v1/metrics/nothing", {"epsilon": 1.0}, format="json")
    assert response.status_code == 404 and response.json()["code"] == "unknown_metric"


def test_change_non_object_body(admin_api, color):
    response = admin_api.put("/api/v1/metrics/color", [1], format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_body"


@pytest.mark.django_db(transaction=True)
def test_concurrent_changes_of_a_metric_with_reports_make_distinct_versions(make_metric, key):
    make_metric(name="color")
    assert item_codes(post_batch(envelope([krr_item()], client_id="c"), key)) == ["accepted"]
    errors, versions = [], []
    barrier = threading.Barrier(4)

    def change(i):
        try:
            barrier.wait()
            versions.append(services.change_metric(name="color", epsilon=1.0 + i / 10).version)
        except ApiError as error:
            versions.append(error.code)
        except BaseException as error:  # noqa: BLE001
            errors.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=change, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    # the four changes serialize on the metric's first row: each makes the next version, none is lost
    stored = dict(Metric.objects.filter(name="color").values_list("version", "epsilon"))
    assert sorted(stored) == [1, 2, 3, 4, 5]
    assert all(isinstance(v, int) for v in versions) and sorted(versions) == [2, 3, 4, 5], versions
    assert sorted(stored[v] for v in (2, 3, 4, 5)) == pytest.approx([1.0, 1.1, 1.2, 1.3])
    assert Metric.objects.get(name="color", version=1).epsilon == 2.0
