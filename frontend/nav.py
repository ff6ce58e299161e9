"""The navigation bar: one entry per page, shown to the roles that may open it.

Add an entry for a new page here (label, URL name, roles); keep the list in the order shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.api.auth import ROLES


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    roles: tuple[str, ...]


ANALYSTS = ROLES
ADMINS = ("admin",)

NAV = [
    NavItem("Dashboard", "frontend:dashboard", ANALYSTS),
    NavItem("Metrics", "frontend:metrics", ANALYSTS),
    NavItem("Query", "frontend:query", ANALYSTS),
    NavItem("Releases", "frontend:releases", ANALYSTS),
    NavItem("Admin", "frontend:admin", ADMINS),
    NavItem("Exports", "frontend:federation-exports", ADMINS),
    NavItem("Contributors", "frontend:federation-contributors", ADMINS),
    NavItem("Transparency log", "frontend:federation-log", ADMINS),
    NavItem("Training", "frontend:training", ADMINS),
]
