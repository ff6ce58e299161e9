"""Permission matrix of every endpoint of the central-DP query API against anonymous callers, ingest keys,
analysts and admins. Analysts query and read their own budget; admins do everything; ingest keys only
ingest. A refused call changes nothing."""

from __future__ import annotations

import uuid

import orjson
import pytest

from accounting.models import BudgetPolicy, LedgerEntry, PartitionCap
from telemetry.models import Release
from telemetry.services import create_ingest_key

pytestmark = pytest.mark.django_db

ANALYST, ADMIN = {"analyst", "admin"}, {"admin"}


def _endpoints(q, release_id):
    return [
        ("POST", "/api/v1/queries", q.body("color", q.day(-1), epsilon="0.1", fresh=True), ANALYST),
        ("GET", "/api/v1/budgets", None, ADMIN),
        ("GET", "/api/v1/budgets/me", None, ANALYST),
        ("GET", "/api/v1/budgets/analysts/ana", None, ADMIN),
        ("PUT", "/api/v1/budgets/analysts/ana", {"daily_epsilon": 7}, ADMIN),
        ("GET", "/api/v1/budgets/groups/analyst", None, ADMIN),
        ("PUT", "/api/v1/budgets/groups/analyst", {"daily_epsilon": 9}, ADMIN),
        ("GET", "/api/v1/budgets/partitions/color", None, ADMIN),
        ("PUT", "/api/v1/budgets/partitions/color", {"lifetime_epsilon": 40}, ADMIN),
        ("GET", "/api/v1/releases", None, ADMIN),
        ("POST", f"/api/v1/releases/{release_id}/verify", None, ADMIN),
    ]


def _call(client, method, url, body):
    if method == "GET":
        return client.get(url)
    data = orjson.dumps(body) if body is not None else b""
    return getattr(client, method.lower())(url, data=data, content_type="application/json")


def _state():
    return (Release.objects.count(), LedgerEntry.objects.count(),
            sorted(BudgetPolicy.objects.values_list("daily_epsilon_micro", flat=True)),
            list(PartitionCap.objects.values_list("lifetime_epsilon_micro", flat=True)))


@pytest.fixture
def principals(q, analyst, admin, color):
    _, key = create_ingest_key(app="phone")
    q.add_krr(color, q.day(-1), "DE", [5, 5, 5])
    release_id = q.run(admin[0], q.body(color, q.day(-1), epsilon="0.5"))["release"]["id"]
    return {
        "anonymous": q.client(raise_errors=False),
        "ingest_key": q.client(api_key=key, raise_errors=False),
        "bad_token": q.client("0" * 40, raise_errors=False),
        "analyst": q.client(analyst[1], raise_errors=False),
        "admin": q.client(admin[1], raise_errors=False),
    }, release_id, key


@pytest.mark.parametrize("who", ["anonymous", "ingest_key", "bad_token", "analyst", "admin"])
def test_permission_matrix(q, principals, who):
    clients, release_id, _ = principals
    client = clients[who]
    role = who if who in ("analyst", "admin") else None
    for method, url, body, allowed in _endpoints(q, release_id):
        before = _state()
        response = _call(client, method, url, body)
        payload = response.json()
        if role in allowed:
            assert response.status_code == 200, (who, method, url, response.status_code, payload)
        else:
            expected = (401,) if role is None else (403,)
            assert response.status_code in expected, (who, method, url, response.status_code, payload)
            codes = {"anonymous": "not_authenticated", "bad_token": "authentication_failed",
                     "ingest_key": "wrong_credential_type"}
            assert payload.get("code") == codes.get(who, "permission_denied"), payload
            assert payload.get("message"), payload
            assert _state() == before, (who, method, url)


def test_only_ingest_keys_ingest(q, principals, color):
    clients, _, _ = principals
    body = {"batch_id": str(uuid.uuid4()), "client_id": "c1",
            "reports": [{"metric": "color", "value": "red", "day": q.day(0).isoformat()}]}
    for who in ("anonymous", "bad_token", "analyst", "admin"):
        response = clients[who].post("/api/v1/reports", data=orjson.dumps(body), content_type="application/json")
        assert response.status_code == 401, (who, response.status_code)
    response = clients["ingest_key"].post("/api/v1/reports", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.json()


def test_wrong_methods_are_405_with_a_code(q, principals):
    clients, release_id, _ = principals
    admin = clients["admin"]
    for method, url in [("GET", "/api/v1/queries"), ("DELETE", "/api/v1/budgets/analysts/ana"),
                        ("POST", "/api/v1/budgets"), ("GET", f"/api/v1/releases/{release_id}/verify"),
                        ("DELETE", "/api/v1/releases")]:
        response = _call(admin, method, url, None) if method == "GET" else \
            getattr(admin, method.lower())(url)
        assert response.status_code == 405, (method, url, response.status_code)
        assert response.json()["code"] == "method_not_allowed"


def test_an_analyst_cannot_raise_their_own_budget(q, principals, analyst, color):
    clients, _, _ = principals
    client = clients["analyst"]
    for url, body in [("/api/v1/budgets/analysts/ana", {"daily_epsilon": 1000}),
                      ("/api/v1/budgets/groups/analyst", {"daily_epsilon": 1000}),
                      ("/api/v1/budgets/partitions/color", {"lifetime_epsilon": 1000})]:
        assert _call(client, "PUT", url, body).status_code == 403
    assert client.get("/api/v1/budgets/me").json()["daily_epsilon"] == 10
    assert BudgetPolicy.objects.count() == 0 and PartitionCap.objects.count() == 0


@pytest.mark.parametrize("url", ["/api/v1/queries", "/api/v1/budgets/me", "/api/v1/budgets", "/api/v1/releases"])
def test_an_ingest_key_on_an_endpoint_for_people_is_told_so(q, principals, url):
    """Not "credentials were not provided": the key was provided, and is the wrong kind of credential."""
    clients, _, _ = principals
    response = _call(clients["ingest_key"], "POST" if url.endswith("queries") else "GET", url,
                     q.body("color", q.day(-1)))
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] == "wrong_credential_type"
    assert "ingest key" in response.json()["message"] and "Token" in response.json()["message"]


def test_an_admins_query_is_charged_like_anyones(q, admin, color):
    """Admins are analysts too for the ledger: a query of theirs is paid from their own daily budget."""
    from accounting.models import LedgerEntry

    user, token = admin
    q.add_krr(color, q.day(-1), "DE", [5, 5, 5])
    before = q.client(token).get("/api/v1/budgets/me").json()["remaining"]
    response = q.post(q.client(token), q.body(color, q.day(-1), epsilon="0.5"))
    assert response.status_code == 200 and response.json()["privacy"]["cached"] is False
    assert q.client(token).get("/api/v1/budgets/me").json()["remaining"] == before - 0.5
    (entry,) = LedgerEntry.objects.all()
    assert (entry.spender, entry.epsilon_micro) == (f"user:{user.pk}", 500_000)
