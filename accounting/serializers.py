"""The accounting API edge: request bodies into typed service arguments, budgets into response JSON.

Every ε, δ and budget figure in a response is a JSON number; requests may give ε and δ as a
JSON number or a numeric string (docs/api.md).
"""

from __future__ import annotations

from decimal import Decimal

from accounting.accountants import from_micro
from accounting.models import BudgetPolicy
from deploy.api.errors import ApiError
from deploy.api.parsing import finite_decimal, object_body, parse_epsilon_micro


def budget_policy_input(data) -> dict:
    """Keyword arguments of ``set_analyst_budget`` / ``set_group_budget`` from a PUT body."""
    body = object_body(data)
    composition = body.get("composition", "pure")
    if not isinstance(composition, str):
        raise ApiError("invalid_composition", "composition must be 'pure' or 'approximate'.")
    delta = None
    if "delta" in body:
        delta = finite_decimal(body["delta"])
        if delta is None:
            raise ApiError("invalid_delta", "delta must be a number or a numeric string.")
    return {"daily_epsilon_micro": parse_epsilon_micro(body.get("daily_epsilon"), "daily_epsilon"),
            "composition": composition, "delta": delta}


def partition_cap_input(data) -> dict:
    """Keyword arguments of ``set_partition_cap`` (less the metric) from a PUT body."""
    return {"lifetime_epsilon_micro": parse_epsilon_micro(object_body(data).get("lifetime_epsilon"),
                                                          "lifetime_epsilon")}


def budget_status_json(username: str, status: dict) -> dict:
    """One analyst's budget today, from ``selectors.budget_status`` (or one row of ``budget_statuses``)."""
    return {
        "username": username,
        "daily_epsilon": float(status["daily_epsilon"]),
        "spent_today": float(status["spent"]),
        "remaining": float(status["remaining"]),
        "composition": status["composition"],
        "delta": float(status["delta"]),
        "policy_source": status["policy_source"],
        "resets_at": status["resets_at"].isoformat(),
    }


def usage_history_json(history: list[dict]) -> list[dict]:
    return [{"day": row["day"].isoformat(), "spent": float(row["spent"])} for row in history]


def group_policy_json(policy: BudgetPolicy) -> dict:
    return {
        "group": policy.group.name,
        "daily_epsilon": float(from_micro(policy.daily_epsilon_micro)),
        "composition": policy.composition,
        "delta": float(policy.delta or Decimal(0)),
    }


def partition_usage_json(name: str, version: int, usage: dict) -> dict:
    """A metric version's lifetime cap and the ε spent on each of its data-days (``selectors.partition_usage``)."""
    return {
        "metric": name,
        "version": version,
        "lifetime_epsilon_cap": float(usage["lifetime_epsilon_cap"]),
        "days": [{"day": row["key"], "spent": float(row["spent"])} for row in usage["partitions"]],
    }
