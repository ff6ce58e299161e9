"""What the admins' pages share: notices after a redirect, secrets shown once, form fields into API bodies."""

from __future__ import annotations

from django.shortcuts import redirect, render
from django.urls import reverse

#: The notices a page shows after a successful POST redirects to it (``?notice=<key>``): fixed texts,
#: so a link cannot make a page say anything else.
NOTICES = {
    "budget-saved": "The budget is saved. It applies from the next query.",
    "cap-saved": "The lifetime cap is saved.",
    "metric-created": "The metric is created (version 1).",
    "version-created": "A new version is made; the old versions and their reports stay as they were.",
    "description-saved": "Only the description changed: it is edited in place, with no new version.",
    "key-revoked": "The ingest key is revoked (every worker refuses it within 60 s).",
    "role-saved": "The role is changed; it applies from the user's next request.",
    "password-saved": "The password is set; the user's other page sessions have ended.",
    "deactivated": "The user is deactivated: their token is deleted and their sessions stop working.",
    "reactivated": "The user is reactivated. They have no token: issue one if they need the API.",
    "token-revoked": "The token is revoked; it stops working at once.",
}


def notice(request) -> str | None:
    return NOTICES.get(request.GET.get("notice", ""))


def redirect_with_notice(url_name: str, key: str, *args):
    assert key in NOTICES, key
    return redirect(f"{reverse(url_name, args=args)}?notice={key}")


def render_secret(request, template: str, context: dict):
    """A page that shows a secret (a token, an ingest key) once: rendered in the POST's answer, never
    redirected to (no URL holds it) and never stored by the browser or a proxy."""
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    return response


def body_of(post, *fields: str) -> dict:
    """The non-blank fields of a form as an API body: the API's serializers parse what the page sends."""
    return {field: post[field].strip() for field in fields if post.get(field, "").strip() != ""}
