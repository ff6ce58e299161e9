"""Who may open a page: the API's roles (``deploy.api.auth.role_of``) on a session login.

A visitor who is not logged in is sent to the login page (and back afterwards); a logged-in user
without the page's role gets the 403 page. Function views take a decorator, class views a mixin.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.shortcuts import render

from deploy.api.auth import ROLES, role_of


def forbidden(request):
    return render(request, "frontend/403.html", status=403)


def not_found(request, what: str = "page"):
    return render(request, "frontend/404.html", {"what": what}, status=404)


def error_page(request, error, title: str = "Refused"):
    """A service's ``ApiError`` as a page, with the API's status, message and code."""
    return render(request, "frontend/error.html", {"error": error, "title": title}, status=error.http_status)


def _refusal(request, roles: tuple[str, ...]):
    """The response that refuses this request, or None when its user holds one of ``roles``."""
    if not request.user.is_authenticated or not request.user.is_active:
        return redirect_to_login(request.get_full_path())
    if role_of(request.user) not in roles:
        return forbidden(request)
    return None


def role_required(*roles: str):
    """Decorator of a function view that only users holding one of ``roles`` may open."""
    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            return _refusal(request, roles) or view(request, *args, **kwargs)
        return wrapped
    return decorator


analyst_required = role_required(*ROLES)  # analysts and admins
admin_required = role_required("admin")


class RoleRequiredMixin:
    """Mixin of a class view: set ``roles``. ``AnalystPage`` and ``AdminPage`` set it for you."""

    roles: tuple[str, ...] = ()

    def dispatch(self, request, *args, **kwargs):
        return _refusal(request, self.roles) or super().dispatch(request, *args, **kwargs)


class AnalystPage(RoleRequiredMixin):
    roles = ROLES


class AdminPage(RoleRequiredMixin):
    roles = ("admin",)
