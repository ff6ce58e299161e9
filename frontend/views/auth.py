"""Session login and logout (Django auth). Logging out is a POST, with its CSRF token."""

from __future__ import annotations

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.urls import path

from deploy.api.auth import role_of


class LoginForm(AuthenticationForm):
    """Only analysts and admins may log in: the pages have nothing for any other account."""

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if role_of(user) is None:
            raise forms.ValidationError("This account has no analyst or admin role.", code="no_role")


class LoginView(auth_views.LoginView):
    template_name = "frontend/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


urlpatterns = [
    path("login", LoginView.as_view(), name="login"),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),
]
