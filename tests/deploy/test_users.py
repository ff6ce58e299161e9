"""Users and tokens (admins): list, create, change role, rotate and revoke a token, deactivate.

Also as an attacker: an analyst, an ingest key or nobody cannot reach any of it; a revoked
token and a deactivated user's token stop working at the very next request; the service
never loses its last active admin, also under two admins demoting each other at once.
"""

from __future__ import annotations

import orjson
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from deploy.api.users import services
from helpers import client, ingest_key, run_threads, user

pytestmark = pytest.mark.django_db

USERS = "/api/v1/users"


def patch(api, username: str, body):
    return api.patch(f"{USERS}/{username}", data=orjson.dumps(body), content_type="application/json")


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    payload = response.json()
    assert payload["code"] == code and payload["message"], payload
    return payload


@pytest.fixture
def root():
    """(user, API client) of the admin 'root'."""
    admin, token = user("root", "admin")
    return admin, client(token)


def can_call_admin_endpoint(token: str) -> bool:
    return client(token).get("/api/v1/ingest-keys").status_code == 200


def test_admin_lists_users_with_role_activity_and_token_presence_never_the_token(root):
    _, ana_token = user("ana", "analyst")
    _, api = root
    get_user_model().objects.create_user(username="norole")
    response = api.get(USERS)
    assert response.status_code == 200
    listing = {row["username"]: row for row in response.json()["users"]}
    assert list(listing) == ["ana", "norole", "root"]
    assert (listing["ana"]["role"], listing["root"]["role"], listing["norole"]["role"]) == ("analyst", "admin", None)
    assert listing["ana"]["active"] is True and listing["ana"]["has_token"] is True
    assert listing["ana"]["token_created_at"] is not None
    assert listing["norole"]["has_token"] is False and listing["norole"]["token_created_at"] is None
    assert "token" not in listing["ana"]
    for token in Token.objects.values_list("key", flat=True):
        assert token not in response.content.decode()
    assert api.get(f"{USERS}/ana").json() == listing["ana"]


def test_the_listing_reads_a_fixed_number_of_queries(root, django_assert_max_num_queries):
    for i in range(20):
        user(f"user{i:02d}", "analyst" if i % 2 else "admin")
    _, api = root
    with django_assert_max_num_queries(6):  # session-free token auth, role check, users, groups
        assert len(api.get(USERS).json()["users"]) == 21


def test_created_user_gets_a_token_shown_once_that_works(root):
    _, api = root
    created = api.post(USERS, {"username": "carol", "role": "analyst"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert (body["username"], body["role"], body["active"], body["has_token"]) == ("carol", "analyst", True, True)
    assert client(body["token"]).get("/api/v1/metrics").status_code == 200
    assert not can_call_admin_endpoint(body["token"])
    assert body["token"] not in api.get(USERS).content.decode()
    assert body["token"] not in api.get(f"{USERS}/carol").content.decode()


@pytest.mark.parametrize("method,url,body", [
    ("get", USERS, None),
    ("post", USERS, {"username": "mallory", "role": "admin"}),
    ("get", f"{USERS}/root", None),
    ("patch", f"{USERS}/ana", {"role": "admin"}),
    ("patch", f"{USERS}/root", {"active": False}),
    ("post", f"{USERS}/root/token", None),
    ("delete", f"{USERS}/root/token", None),
])
def test_only_admins_reach_users_and_tokens(root, method, url, body):
    _, ana_token = user("ana", "analyst")
    _, key = ingest_key()
    data = orjson.dumps(body) if body is not None else b""

    def send(api):
        return getattr(api, method)(url, data=data, content_type="application/json")

    assert_error(send(client(ana_token)), 403, "permission_denied")
    assert_error(send(client(api_key=key)), 401, "wrong_credential_type")
    assert_error(send(client()), 401, "not_authenticated")
    assert_error(send(client("0" * 40)), 401, "authentication_failed")
    ana = get_user_model().objects.get(username="ana")
    assert get_user_model().objects.count() == 2 and ana.is_active and not ana.is_staff
    assert Token.objects.filter(key=ana_token).exists()


def test_changing_a_role_applies_at_the_next_request(root):
    _, api = root
    _, token = user("ana", "analyst")
    assert not can_call_admin_endpoint(token)
    promoted = patch(api, "ana", {"role": "admin"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert can_call_admin_endpoint(token)
    assert patch(api, "ana", {"role": "analyst"}).json()["role"] == "analyst"
    assert not can_call_admin_endpoint(token)
    assert client(token).get("/api/v1/metrics").status_code == 200
    groups = set(get_user_model().objects.get(username="ana").groups.values_list("name", flat=True))
    assert groups == {"analyst"}


def test_a_demoted_superuser_is_no_longer_an_admin(root):
    _, api = root
    boss = get_user_model().objects.create_superuser(username="boss", password="pw-unused-here")
    token = Token.objects.create(user=boss).key
    assert can_call_admin_endpoint(token)
    assert patch(api, "boss", {"role": "analyst"}).json()["role"] == "analyst"
    assert not can_call_admin_endpoint(token)


def test_a_revoked_token_stops_working_at_once(root):
    _, api = root
    _, token = user("ana", "analyst")
    assert client(token).get("/api/v1/budgets/me").status_code == 200
    revoked = api.delete(f"{USERS}/ana/token")
    assert revoked.status_code == 200 and revoked.json()["has_token"] is False
    assert_error(client(token).get("/api/v1/budgets/me"), 401, "authentication_failed")
    assert api.delete(f"{USERS}/ana/token").status_code == 200  # again: nothing left to revoke, no error


def test_a_rotated_token_replaces_the_old_one(root):
    _, api = root
    _, old = user("ana", "analyst")
    rotated = api.post(f"{USERS}/ana/token")
    assert rotated.status_code == 201
    new = rotated.json()["token"]
    assert new != old
    assert_error(client(old).get("/api/v1/budgets/me"), 401, "authentication_failed")
    assert client(new).get("/api/v1/budgets/me").status_code == 200


def test_a_deactivated_user_is_locked_out_and_reactivation_gives_no_token_back(root):
    _, api = root
    _, token = user("ana", "analyst")
    deactivated = patch(api, "ana", {"active": False})
    assert deactivated.status_code == 200
    assert (deactivated.json()["active"], deactivated.json()["has_token"]) == (False, False)
    assert_error(client(token).get("/api/v1/metrics"), 401, "authentication_failed")
    assert_error(api.post(f"{USERS}/ana/token"), 409, "user_inactive")
    assert patch(api, "ana", {"active": False}).status_code == 200  # again: no change, no error
    reactivated = patch(api, "ana", {"active": True}).json()
    assert (reactivated["active"], reactivated["has_token"]) == (True, False)
    assert_error(client(token).get("/api/v1/metrics"), 401, "authentication_failed")
    fresh = api.post(f"{USERS}/ana/token").json()["token"]
    assert client(fresh).get("/api/v1/metrics").status_code == 200


def test_a_deactivated_users_token_cannot_be_used_even_if_it_were_left_behind(root):
    """The token row is deleted on deactivation; were one left (made by hand), DRF still refuses an inactive user."""
    _, api = root
    ana, _ = user("ana", "analyst")
    patch(api, "ana", {"active": False})
    stray = Token.objects.create(user=ana).key
    assert_error(client(stray).get("/api/v1/metrics"), 401, "authentication_failed")


def test_an_admin_cannot_deactivate_themself_or_remove_the_last_admin(root):
    admin, api = root
    assert_error(patch(api, "root", {"active": False}), 409, "cannot_deactivate_self")
    assert_error(patch(api, "root", {"role": "analyst"}), 409, "last_admin")
    admin.refresh_from_db()
    assert admin.is_active and can_call_admin_endpoint(Token.objects.get(user=admin).key)
    _, other_token = user("adam", "admin")
    assert patch(api, "root", {"role": "analyst"}).status_code == 200  # another admin is left
    assert_error(patch(client(other_token), "adam", {"role": "analyst"}), 409, "last_admin")


@pytest.mark.django_db(transaction=True)
def test_two_admins_deactivating_each_other_at_once_leave_one_admin():
    """The advisory lock lets one through; the other then finds its target the only active admin left."""
    first, _ = user("first", "admin")
    second, _ = user("second", "admin")
    pairs = [(first, "second"), (second, "first")]

    def demote(i):
        actor, target = pairs[i]
        try:
            services.change_user(actor=actor, username=target, active=False)
            return "done"
        except Exception as error:  # noqa: BLE001 - the code is the result
            return getattr(error, "code", repr(error))

    results = run_threads(2, demote)
    assert sorted(results) == ["done", "last_admin"]
    assert get_user_model().objects.filter(is_active=True).count() == 1


def test_a_password_lets_a_user_log_in_to_the_pages_and_is_never_shown(root):
    from django.contrib.auth import authenticate

    _, api = root
    created = api.post(USERS, {"username": "carol", "role": "analyst", "password": "correct horse battery"},
                       format="json")
    assert created.status_code == 201 and created.json()["has_password"] is True
    assert authenticate(username="carol", password="correct horse battery") is not None
    assert patch(api, "carol", {"password": "another long secret"}).status_code == 200
    assert authenticate(username="carol", password="correct horse battery") is None
    assert authenticate(username="carol", password="another long secret") is not None
    assert "secret" not in api.get(USERS).content.decode()
    assert api.post(USERS, {"username": "dan", "role": "analyst"}, format="json").json()["has_password"] is False
    too_short = api.post(USERS, {"username": "erin", "role": "analyst", "password": "short"}, format="json")
    assert assert_error(too_short, 400, "invalid_password")["field"] == "password"
    assert not get_user_model().objects.filter(username="erin").exists()
    assert_error(patch(api, "carol", {"password": 12345678901234}), 400, "invalid_password")


@pytest.mark.parametrize("body,status,code", [
    ([], 400, "invalid_body"),
    ({"role": "root"}, 400, "invalid_role"),
    ({"role": 1}, 400, "invalid_role"),
    ({"active": "false"}, 400, "invalid_active"),
    ({"username": "eve"}, 400, "unknown_field"),
])
def test_bad_changes_are_refused_and_change_nothing(root, body, status, code):
    _, api = root
    user("ana", "analyst")
    assert_error(patch(api, "ana", body), status, code)
    ana = get_user_model().objects.get(username="ana")
    assert ana.is_active and set(ana.groups.values_list("name", flat=True)) == {"analyst"}


@pytest.mark.parametrize("method,url", [("get", f"{USERS}/ghost"), ("patch", f"{USERS}/ghost"),
                                        ("post", f"{USERS}/ghost/token"), ("delete", f"{USERS}/ghost/token")])
def test_an_unknown_user_is_404(root, method, url):
    _, api = root
    data = orjson.dumps({"role": "analyst"}) if method == "patch" else b""
    assert_error(getattr(api, method)(url, data=data, content_type="application/json"), 404, "unknown_user")
