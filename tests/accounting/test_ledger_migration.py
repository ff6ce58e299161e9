"""Migration 0003 carries the old, query-shaped ledger over to mechanism events, and keeps it insert-only."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

OLD = [("accounting", "0002_ledger_insert_only"), ("telemetry", "0004_ingest_hot_path")]
NEW = [("accounting", "0003_generic_ledger")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_old_ledger_rows_become_discrete_laplace_events_on_metric_partitions():
    apps = _migrate(OLD)
    try:
        User = apps.get_model("auth", "User")
        Metric = apps.get_model("telemetry", "Metric")
        Release = apps.get_model("telemetry", "Release")
        user = User.objects.create(username="old-analyst")
        metric = Metric.objects.create(name="old", version=1, domain=["a", "b"], epsilon=1.0, protocol="krr",
                                       contribution_bound=1)
        release = Release.objects.create(id=uuid.uuid4(), analyst=user, metric=metric, query={}, query_key="k",
                                         epsilon_micro=250_000, sensitivity=2, noise_scale="8", regions=[],
                                         watermark=0, noisy_counts=b"", sealed_seed=b"")
        apps.get_model("accounting", "LedgerEntry").objects.create(
            user=user, budget_day=date(2026, 1, 3), metric=metric, data_start=date(2026, 1, 1),
            data_end=date(2026, 1, 2), epsilon_micro=250_000, composition="pure", release=release)
        apps.get_model("accounting", "DailySpend").objects.create(user=user, day=date(2026, 1, 3), spent_micro=250_000)
        for day in (date(2026, 1, 1), date(2026, 1, 2)):
            apps.get_model("accounting", "PartitionSpend").objects.create(metric=metric, data_day=day,
                                                                          spent_micro=250_000)
        apps.get_model("accounting", "PartitionCap").objects.create(metric=metric, lifetime_epsilon_micro=9_000_000)

        apps = _migrate(NEW)
        entry = apps.get_model("accounting", "LedgerEntry").objects.get()
        assert entry.spender == f"user:{user.pk}"
        assert entry.event == {"kind": "discrete_laplace", "epsilon": "0.25", "sensitivity": 2}
        assert entry.partitions == [[f"metric:{metric.pk}", "2026-01-01"], [f"metric:{metric.pk}", "2026-01-02"]]
        assert (entry.subject_kind, entry.subject_id, entry.epsilon_micro) == ("release", str(release.id), 250_000)
        assert apps.get_model("accounting", "DailySpend").objects.get().spender == f"user:{user.pk}"
        assert sorted(apps.get_model("accounting", "PartitionSpend").objects.values_list("scope", "key")) == [
            (f"metric:{metric.pk}", "2026-01-01"), (f"metric:{metric.pk}", "2026-01-02")]
        assert apps.get_model("accounting", "PartitionCap").objects.get().scope == f"metric:{metric.pk}"
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE accounting_ledgerentry SET epsilon_micro = 1")
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
