"""Template context for every page: the user's role and the navigation entries they may open."""

from __future__ import annotations

from django.urls import reverse

from deploy.api.auth import role_of
from frontend.nav import NAV


def navigation(request) -> dict:
    user = getattr(request, "user", None)
    role = role_of(user) if user is not None else None
    if role is None:
        return {"role": None, "nav": []}
    path = request.path
    items = []
    for item in NAV:
        if role in item.roles:
            url = reverse(item.url_name)
            current = path == url or (url != "/" and path.startswith(url + "/"))
            items.append({"label": item.label, "url": url, "current": current})
    return {"role": role, "nav": items}
