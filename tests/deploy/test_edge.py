"""The API edge as a careless client meets it: every refusal is a JSON error with a stable code,
text PostgreSQL cannot store is refused before it reaches the database, one type per field, and
reads that do not grow with the number of rows."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounting.models import BudgetPolicy, PartitionCap
from accounting.services.policies import set_analyst_budget, set_group_budget
from deploy.api.users.services import create_user
from telemetry import services
from telemetry.models import IngestKey, Metric

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def client(token: str | None = None) -> APIClient:
    api = APIClient(raise_request_exception=False)
    if token:
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return api


def send(api: APIClient, method: str, url: str, body: bytes | dict | None = None, **headers):
    data = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else b""
    return getattr(api, method.lower())(url, data=data, content_type="application/json", **headers)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    payload = response.json()
    assert payload["code"] == code and payload["message"], payload
    return payload


@pytest.fixture
def admin() -> APIClient:
    return client(create_user(username="root", role="admin")[1])


@pytest.fixture
def color():
    return services.create_metric(name="color", domain=["red", "green", "blue"], protocol="krr")


# --------------------------------------------------------------------------- NUL characters

NUL_BODIES = [
    ("POST", "/api/v1/metrics", {"name": "shade", "domain": ["red", "gr\u0000een"]}),
    ("POST", "/api/v1/metrics", {"name": "shade", "domain": ["red", "green"], "description": "a\u0000b"}),
    ("POST", "/api/v1/metrics", {"name": "shade", "domain": ["red", "green"], "note\u0000": 1}),
    ("PUT", "/api/v1/metrics/color", {"description": "\u0000"}),
    ("PUT", "/api/v1/metrics/color", {"domain": ["red", "green", "blue", "bl\u0000ck"]}),
    ("POST", "/api/v1/ingest-keys", {"app": "my\u0000app"}),
    ("POST", "/api/v1/users", {"username": "bob\u0000", "role": "analyst"}),
    ("PUT", "/api/v1/budgets/groups/analyst", {"daily_epsilon": "1", "composition": "pure\u0000"}),
]


def _stored():
    return (list(Metric.objects.values_list("name", "version", "description", "domain")),
            IngestKey.objects.count(), BudgetPolicy.objects.count(), Group.objects.count())


@pytest.mark.parametrize("method,url,body", NUL_BODIES, ids=[f"{m} {u} {i}" for i, (m, u, _) in enumerate(NUL_BODIES)])
def test_nul_in_any_body_text_is_a_400_and_writes_nothing(admin, color, method, url, body):
    raw = orjson.dumps(body)
    assert b"\\u0000" in raw  # sent the way a JSON client escapes it
    before = _stored()
    assert_error(send(admin, method, url, raw), 400, "nul_character")
    assert _stored() == before


@pytest.mark.parametrize("url", ["/api/v1/budgets/analysts/ro%00ot", "/api/v1/budgets/groups/ana%00lyst",
                                 "/api/v1/budgets/partitions/color?version=%00",
                                 "/api/v1/metrics?x=%00", "/api/v1/nothing%00here"])
def test_nul_in_the_url_is_a_400(admin, color, url):
    assert_error(admin.get(url), 400, "nul_character")
    assert_error(send(admin, "PUT", url, {"daily_epsilon": 1, "lifetime_epsilon": 1}), 400, "nul_character")
    assert BudgetPolicy.objects.count() == 0 and PartitionCap.objects.count() == 0


def test_an_escaped_backslash_before_u0000_is_ordinary_text(admin):
    """Only a real NUL is refused: the six characters \\u0000 are fine."""
    response = send(admin, "POST", "/api/v1/metrics", {"name": "shade", "domain": ["a", "b"], "description": "\\u0000"})
    assert response.status_code == 201, response.json()
    assert Metric.objects.get(name="shade").description == "\\u0000"


# --------------------------------------------------------------------------- JSON errors only


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("url", ["/api/v1/metrics", "/api/v1/reports", "/api/v1/queries"])
def test_a_body_over_the_upload_limit_is_a_413_json(settings, admin, url, debug):
    settings.DEBUG = debug
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = b'{"pad": "' + b"x" * limit + b'"}'
    assert_error(send(admin, "POST", url, body), 413, "body_too_large")
    assert Metric.objects.count() == 0


def test_a_body_at_the_upload_limit_is_read(settings, admin):
    head = orjson.dumps({"name": "shade", "domain": ["a", "b"], "description": ""})[:-2]
    pad = settings.DATA_UPLOAD_MAX_MEMORY_SIZE - len(head) - 2
    body = head + b"x" * pad + b'"}'
    assert len(body) == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert send(admin, "POST", "/api/v1/metrics", body).status_code == 201


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("method,url", [("GET", "/nothing"), ("GET", "/api/v1/nothing"), ("POST", "/api/v1/metric"),
                                        ("GET", "/api/v1/ingest-keys/abc"), ("GET", "/api/v1/metrics/"),
                                        ("DELETE", "/api/v2/metrics")])
def test_unknown_paths_are_a_json_404_also_in_debug(settings, admin, debug, method, url):
    settings.DEBUG = debug
    assert_error(send(admin, method, url), 404, "not_found")


@pytest.mark.parametrize("accept", ["text/html", "text/html,application/xhtml+xml;q=0.9", "application/xml",
                                    "image/png"])
def test_any_accept_header_gets_json(admin, color, accept):
    listed = admin.get("/api/v1/metrics", HTTP_ACCEPT=accept)
    assert listed.status_code == 200 and listed["Content-Type"] == "application/json"
    assert [m["name"] for m in listed.json()["metrics"]] == ["color"]
    assert_error(client().get("/api/v1/metrics", HTTP_ACCEPT=accept), 401, "not_authenticated")
    assert_error(send(admin, "PUT", "/api/v1/metrics/nothing", {"epsilon": 1}, HTTP_ACCEPT=accept), 404,
                 "unknown_metric")


# --------------------------------------------------------------------------- one type per field


def test_budget_figures_are_json_numbers_everywhere(admin, color):
    ana, token = create_user(username="ana", role="analyst")
    root = admin
    put = send(root, "PUT", "/api/v1/budgets/analysts/ana",
               {"daily_epsilon": "2.5", "composition": "approximate", "delta": "1e-6"})
    assert put.status_code == 200, put.json()
    group = send(root, "PUT", "/api/v1/budgets/groups/analyst", {"daily_epsilon": 3, "composition": "approximate"})
    cap = send(root, "PUT", "/api/v1/budgets/partitions/color", {"lifetime_epsilon": "40.5"})
    statuses = root.get("/api/v1/budgets").json()
    me = client(token).get("/api/v1/budgets/me").json()

    assert (put.json()["daily_epsilon"], put.json()["delta"], put.json()["remaining"]) == (2.5, 1e-6, 2.5)
    assert group.json() == {"group": "analyst", "daily_epsilon": 3.0, "composition": "approximate", "delta": 1e-6}
    assert cap.json() == {"metric": "color", "version": 1, "lifetime_epsilon_cap": 40.5, "days": []}
    assert statuses["groups"] == [group.json()]
    figures = [(row["daily_epsilon"], row["spent_today"], row["remaining"], row["delta"])
               for row in statuses["analysts"] + [me]]
    assert figures == [(2.5, 0, 2.5, 1e-6), (10, 0, 10, 0), (2.5, 0, 2.5, 1e-6)]
    for value in (number for row in figures for number in row):
        assert type(value) is float  # one JSON type: never a string, and the same type for 0 as for 2.5


@pytest.mark.parametrize("epsilon,stored", [("1.5", 1.5), (" 3 ", 3.0), ("0.25", 0.25), (1, 1.0), ("2e0", 2.0)])
def test_metric_epsilon_is_a_number_or_a_numeric_string(admin, epsilon, stored):
    created = send(admin, "POST", "/api/v1/metrics", {"name": "shade", "domain": ["a", "b"], "epsilon": epsilon})
    assert created.status_code == 201, created.json()
    assert created.json()["epsilon"] == stored and type(created.json()["epsilon"]) is float
    changed = send(admin, "PUT", "/api/v1/metrics/shade", {"epsilon": str(stored / 2)})
    assert changed.json()["epsilon"] == stored / 2 and changed.json()["version"] == 2


# --------------------------------------------------------------------------- errors that name the problem


@pytest.mark.parametrize("version", ["abc", "0", "-1", "1.0", "", " 1", "١", "9" * 40])
def test_a_bad_version_parameter_is_invalid_version(admin, color, version):
    url = "/api/v1/budgets/partitions/color"
    assert_error(admin.get(url, {"version": version}), 400, "invalid_version")
    assert_error(send(admin, "PUT", f"{url}?version={version}", {"lifetime_epsilon": 5}), 400, "invalid_version")
    assert PartitionCap.objects.count() == 0


def test_the_version_parameter_picks_the_version(admin, color):
    services.change_metric(name="color", epsilon=1.0)
    url = "/api/v1/budgets/partitions/color"
    assert admin.get(url).json()["version"] == 2
    assert send(admin, "PUT", f"{url}?version=1", {"lifetime_epsilon": 7}).json()["lifetime_epsilon_cap"] == 7
    assert PartitionCap.objects.get().scope == f"metric:{color.id}"
    missing = assert_error(admin.get(url, {"version": "3"}), 404, "unknown_metric_version")
    assert "3" in missing["message"]
    assert_error(admin.get("/api/v1/budgets/partitions/ghost", {"version": "1"}), 404, "unknown_metric")


@pytest.mark.parametrize("name", ["color\n", "colour\n"])
def test_a_metric_name_with_a_trailing_newline_is_refused(admin, color, name):
    response = send(admin, "POST", "/api/v1/metrics", {"name": name, "domain": ["a", "b"]})
    assert assert_error(response, 400, "invalid_metric")["field"] == "name"
    assert list(Metric.objects.values_list("name", flat=True)) == ["color"]


def test_a_username_with_a_trailing_newline_is_refused(admin):
    assert_error(send(admin, "POST", "/api/v1/users", {"username": "bob\n", "role": "analyst"}), 400,
                 "invalid_username")


@pytest.mark.parametrize("body,code", [({"app": 7}, "invalid_app"), ({}, "invalid_app"),
                                       ({"username": ["bob"], "role": "analyst"}, "invalid_username"),
                                       ({"username": "bob", "role": None}, "invalid_role")])
def test_wrongly_typed_key_and_user_fields_are_400(admin, body, code):
    url = "/api/v1/ingest-keys" if "app" in body or not body else "/api/v1/users"
    assert_error(send(admin, "POST", url, body), 400, code)


# --------------------------------------------------------------------------- reads in a fixed number of queries


def _analysts(count: int, start: int) -> None:
    """Analysts under each kind of policy: own pure, own approximate, group, default."""
    Group.objects.get_or_create(name="team")
    for i in range(start, start + count):
        user, _ = create_user(username=f"user{i:02d}", role="analyst" if i % 2 else "admin")
        if i % 4 == 0:
            set_analyst_budget(username=user.username, daily_epsilon_micro=3_000_000)
        elif i % 4 == 1:
            set_analyst_budget(username=user.username, daily_epsilon_micro=4_000_000, composition="approximate")
        elif i % 4 == 2:
            user.groups.add(Group.objects.get(name="team"))


def _budgets_queries(admin_client) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get("/api/v1/budgets")
    assert response.status_code == 200
    return len(queries), response.json()


def test_budgets_listing_takes_a_fixed_number_of_queries(admin, django_assert_max_num_queries):
    from accounting.selectors import budget_statuses

    _analysts(4, 0)
    set_group_budget(name="team", daily_epsilon_micro=2_000_000, composition="approximate")
    few, small = _budgets_queries(admin)
    _analysts(12, 4)
    many, large = _budgets_queries(admin)
    assert len(large["analysts"]) == len(small["analysts"]) + 12 == 17
    assert many == few, (few, many)
    with django_assert_max_num_queries(5):  # users, their groups, policies, running totals, ledger events
        assert len(budget_statuses()) == 17


def test_budgets_listing_agrees_with_each_analysts_own_status(admin):
    _analysts(8, 0)
    set_group_budget(name="team", daily_epsilon_micro=2_000_000, composition="approximate", delta=None)
    listing = admin.get("/api/v1/budgets").json()["analysts"]
    assert [row["username"] for row in listing] == sorted(row["username"] for row in listing)
    sources = set()
    for row in listing:
        own = admin.get(f"/api/v1/budgets/analysts/{row['username']}").json()
        own.pop("history")
        assert row == own
        sources.add(row["policy_source"])
    assert sources == {"analyst", "group:team", "default"}


# --------------------------------------------------------------------------- docs/api.md lists every code


def _codes_in_code() -> set[str]:
    """Every code an ApiError is raised with, the codes of DRF's exceptions, and deploy/urls.py's."""
    from deploy.api.errors import _DRF_CODES

    sources = [p for app in ("deploy", "accounting", "telemetry", "federation") for p in (ROOT / app).rglob("*.py")
               if "sdk" not in p.parts and "migrations" not in p.parts]
    raised = re.compile(r"""ApiError\(\s*["']([a-z_]+)["']""")
    codes = {code for path in sources for code in raised.findall(path.read_text())}
    codes |= set(re.findall(r'"code": "([a-z_]+)"', (ROOT / "deploy" / "urls.py").read_text()))
    return codes | set(_DRF_CODES.values())


def test_every_error_code_is_in_the_api_docs_with_its_status():
    table = re.findall(r"^\| `([a-z_]+)` \| (\d{3})\b", (ROOT / "docs" / "api.md").read_text(), re.MULTILINE)
    documented = dict(table)
    assert len(documented) == len(table), "a code is listed twice"
    codes = _codes_in_code()
    assert {"not_authenticated", "permission_denied", "unknown_ingest_key", "nul_character",
            "wrong_credential_type", "body_too_large", "not_found"} <= codes
    assert sorted(codes - documented.keys()) == []
    assert sorted(documented.keys() - codes) == []  # no stale rows either
