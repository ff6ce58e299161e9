"""The users API edge: request bodies into typed service arguments, users into response JSON.

A token appears in a response only when it is made (create, rotate); listings say whether a
user has one and since when, never what it is.
"""

from __future__ import annotations

from deploy.api.auth import role_of
from deploy.api.errors import ApiError
from deploy.api.parsing import object_body
from deploy.api.users.selectors import token_created_at

_CHANGEABLE = ("role", "active", "password")


def _text(body: dict, field: str, code: str) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise ApiError(code, f"{field} must be a string.", field=field)
    return value


def user_input(data) -> dict:
    """Keyword arguments of ``services.create_user``."""
    body = object_body(data)
    fields = {"username": _text(body, "username", "invalid_username"), "role": _text(body, "role", "invalid_role")}
    if body.get("password") is not None:
        fields["password"] = _text(body, "password", "invalid_password")
    return fields


def user_change_input(data) -> dict:
    """Keyword arguments of ``services.change_user``: any of ``role`` (a role name), ``active`` (a boolean)
    and ``password`` (for the pages' login)."""
    body = object_body(data)
    unknown = sorted(set(body) - set(_CHANGEABLE))
    if unknown:
        raise ApiError("unknown_field", f"Unknown field {unknown[0]!r}; a user takes {list(_CHANGEABLE)}.",
                       field=unknown[0])
    changes = {}
    if "role" in body:
        changes["role"] = _text(body, "role", "invalid_role")
    if "active" in body:
        if not isinstance(body["active"], bool):
            raise ApiError("invalid_active", "active must be true or false.", field="active")
        changes["active"] = body["active"]
    if "password" in body:
        changes["password"] = _text(body, "password", "invalid_password")
    return changes


def user_json(user) -> dict:
    return {"username": user.username, "role": role_of(user), "active": user.is_active,
            "has_password": user.has_usable_password(), "has_token": token_created_at(user) is not None, "token_created_at": token_created_at(user),
            "date_joined": user.date_joined, "last_login": user.last_login}


def new_token_json(user, token: str) -> dict:
    """A user and the token just made for them: the only answer that holds a token."""
    return {**user_json(user), "token": token}
