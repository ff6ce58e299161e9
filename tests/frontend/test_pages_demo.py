"""The README's first command leads to the pages: the demo prints their URL and logins that work."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import authenticate

from telemetry.management.commands.demo import DEMO_PASSWORDS, Command

pytestmark = pytest.mark.django_db


def test_the_demo_users_log_in_with_the_printed_passwords_and_the_welcome_names_the_pages(client):
    command = Command(stdout=io.StringIO())
    tokens = [command._user_token("demo_analyst", "analyst"), command._user_token("demo_admin", "admin")]
    assert command._user_token("demo_analyst", "analyst") == tokens[0]  # a rerun keeps the user and token
    command._print_welcome("http://127.0.0.1:8000", "ik_x", *tokens)
    welcome = command.stdout.getvalue()
    assert "pages:          http://127.0.0.1:8000/" in welcome
    for username, password in DEMO_PASSWORDS.items():
        assert f"{username} / {password}" in welcome
        assert authenticate(username=username, password=password) is not None
    response = client.post("/login", {"username": "demo_analyst", "password": DEMO_PASSWORDS["demo_analyst"]})
    assert (response.status_code, response["Location"]) == (302, "/")
