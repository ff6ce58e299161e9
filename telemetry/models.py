"""Metric catalog, ingest keys, staged reports, counts, and releases.

Aggregate, then discard (docs/privacy.md, "Storage"): ingest stages each batch's
reports per metric (``StagedReports``), carrying no client identifier; the
periodic roll-up folds them into ``ObservedCounts`` (the current totals) and
``CountDelta`` (what each ``RollupEpoch`` added; epochs no release counted are merged into
the newest, telemetry.epochs), then deletes them.
Per-client limits live in ``ClientCounter`` under a daily secret, and expire.
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

PROTOCOL_CHOICES = [("krr", "k-ary randomized response"), ("oue", "optimized unary encoding"),
                    ("olh", "optimized local hashing"), ("ss", "subset selection")]


class Metric(models.Model):
    """One version of a metric. Versions with stored reports never change."""

    name = models.SlugField(max_length=64)
    version = models.PositiveIntegerField(default=1)
    description = models.TextField(blank=True)
    domain = models.JSONField(help_text="Ordered list of value labels.")
    epsilon = models.FloatField(help_text="Local ε of the client-side randomizer: the per-value ε of the memo.")
    report_epsilon = models.FloatField(
        help_text="ε of one report alone (<= epsilon), which sets the instantaneous step's keep probability "
        "(privacy.ldp.longitudinal). Equal to epsilon: every report is the memo (metrics made before 0005)."
    )
    protocol = models.CharField(max_length=8, choices=PROTOCOL_CHOICES)
    contribution_bound = models.PositiveIntegerField(
        default=1, help_text="Reports per client, metric and day (m); the central-DP sensitivity."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="metric_name_version")]
        ordering = ["name", "-version"]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def save(self, *args, **kwargs):
        if self.report_epsilon is None:  # rows written without one keep the pre-0005 channel (λ = 1)
            self.report_epsilon = self.epsilon
        super().save(*args, **kwargs)

    @property
    def k(self) -> int:
        return len(self.domain)


class IngestKey(models.Model):
    """An app's key for ``POST /api/v1/reports``. Only its SHA-256 is stored."""

    app = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.app} ({self.prefix}…)"


class Batch(models.Model):
    """An accepted batch, kept for idempotent replay.

    ``body_digest`` hashes the canonical body without ``client_id``, so a
    replay with another body is detected without storing who sent it.
    """

    batch_id = models.UUIDField(primary_key=True)
    # No database-level constraint: its check would lock the key's row on every ingest commit.
    # Keys are never deleted (revocation sets revoked_at), and PROTECT guards the ORM. No index either:
    # nothing reads batches by key, and it cost every batch an index insert.
    ingest_key = models.ForeignKey(IngestKey, on_delete=models.PROTECT, related_name="batches", db_constraint=False,
                                   db_index=False)
    body_digest = models.CharField(max_length=64)
    item_count = models.PositiveSmallIntegerField()
    rejections = models.JSONField(default=list, help_text="[[index, code], ...] of rejected items.")
    received_at = models.DateTimeField(default=timezone.now)


class StagedReports(models.Model):
    """One batch's admitted reports of one metric, packed (:mod:`telemetry.staging`), until the roll-up
    folds them into counts and deletes the row.

    It holds no client id, no batch id and no time. Only the transaction that wrote it
    ties it to its batch record (PostgreSQL's ``xmin``), and that tie ends when the roll-up
    deletes the row: within ``ROLLUP_INTERVAL_S`` of its commit (the staging window,
    docs/privacy.md). ``metric`` has no database-level constraint, to keep its trigger
    off the ingest path; metrics are never deleted.
    """

    id = models.BigAutoField(primary_key=True)
    metric = models.ForeignKey(Metric, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)
    payload = models.BinaryField()


class ObservedCounts(models.Model):
    """Raw observed support counts of one (metric, day, region), rolled up.

    ``support`` holds ``k`` little-endian int64 counts: how many reports
    support each value (for k-RR, how many reported it).
    """

    metric = models.ForeignKey(Metric, on_delete=models.PROTECT)
    day = models.DateField()
    region = models.CharField(max_length=2, blank=True, default="")
    reports = models.BigIntegerField()
    support = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["metric", "day", "region"], name="observed_metric_day_region")]


class RollupEpoch(models.Model):
    """One completed roll-up: the data version of the releases computed on its counts.

    ``token`` is what analysts see of it (``data_version``): random, so it says
    nothing about how much data there is. A roll-up makes an epoch on every run,
    with or without new reports, so even its changes say nothing about arrivals.
    """

    id = models.BigAutoField(primary_key=True)
    token = models.CharField(max_length=32, unique=True)
    completed_at = models.DateTimeField(default=timezone.now)


class CountDelta(models.Model):
    """What one roll-up epoch added to the counts of one (metric, day, region).

    The raw counts at epoch E are the sum of the deltas of epochs <= E: an audit
    recounts a release's raw grid from them (telemetry.release.audit). Rows of a
    released epoch never change; those of epochs no release counted are merged into
    the newest epoch's (telemetry.epochs).
    """

    epoch = models.BigIntegerField()
    metric = models.ForeignKey(Metric, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False)
    day = models.DateField()
    region = models.CharField(max_length=2, blank=True, default="")
    reports = models.BigIntegerField()
    support = models.BinaryField()

    class Meta:
        indexes = [models.Index(fields=["metric", "day", "epoch"], name="countdelta_metric_day_epoch")]


class DailySecret(models.Model):
    """The HMAC secret of one data day's client pseudonyms: one per day, whichever worker asks.

    Deleted with that day's counters once the day can no longer receive reports;
    after that no counter can be linked to a client id (invariant 1).
    """

    day = models.DateField(primary_key=True)
    secret = models.BinaryField()


class ClientCounter(models.Model):
    """Reports of one client for one data day: over all metrics, or of one metric.

    ``key`` is the first 8 bytes (signed big-endian) of HMAC-SHA256(secret of the day,
    client_id NUL metric id, or * for all metrics): a client's counters of one day share
    nothing visible, and no two days' do. Updated in the transaction that stages the
    batch, so a count exists exactly when its reports are stored. ``day`` has no index:
    only the hourly expiry reads it.
    """

    key = models.BigIntegerField(primary_key=True)
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)


class Release(models.Model):
    """One central-DP answer, its noisy counts and its audit record.

    ``noisy_counts`` is the mechanism's output (raw + exact noise) over the
    query's data-independent grid; re-serving it is free post-processing, and
    ``released_digest`` pins what that post-processing returned the first time.
    Raw counts are never stored here. ``sealed_seed`` is the DRBG seed that
    drew the noise, AES-GCM-sealed under the audit key; with it and the counts
    of ``data_epoch`` an admin re-derives the noise and recounts the raw data.

    A query grouped by region also stores ``selection_counts`` (each cell's
    report count plus independent noise of ``selection_scale``, drawn after the
    grid's noise from the same seed), which decide the regions shown. The ε split
    is fixed by the two scales, so re-rendering never reads today's settings for it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    analyst = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="releases")
    metric = models.ForeignKey(Metric, on_delete=models.PROTECT, related_name="releases")
    query = models.JSONField(help_text="The canonical query.")
    query_key = models.CharField(max_length=64, db_index=True)
    epsilon_micro = models.BigIntegerField()
    sensitivity = models.PositiveIntegerField()
    noise_scale = models.CharField(max_length=64, help_text="Discrete Laplace scale Δ/ε as a fraction 'num/den'.")
    regions = models.JSONField(help_text="The region axis of the grid, when grouped by region.")
    data_epoch = models.BigIntegerField(null=True, help_text="The roll-up epoch whose counts were noised; "
                                        "null for releases made before epochs existed.")
    noisy_counts = models.BinaryField()
    selection_scale = models.CharField(max_length=64, null=True, help_text="Discrete Laplace scale m/ε_sel of the "
                                       "selection counts as 'num/den'; null when the release selects no regions.")
    selection_counts = models.BinaryField(null=True, help_text="Each grid cell's report count plus its selection "
                                          "noise, packed like noisy_counts; null with selection_scale.")
    sealed_seed = models.BinaryField()
    confidence = models.FloatField(default=0.95)
    simultaneous = models.BooleanField(default=False)
    released_digest = models.CharField(max_length=64, default="", help_text="SHA-256 of the data as first returned.")
    created_at = models.DateTimeField(default=timezone.now)

    def delete(self, *args, **kwargs):
        raise PermissionError("a release is the audit record of a ledger charge: it is never deleted")
