"""Training datasets and DP-SGD training jobs.

A :class:`Dataset` is one lifetime-capped partition of the ledger, ``dataset:<id>``
(its cap is an ``accounting.PartitionCap`` row of that scope). A :class:`TrainingJob`
reserves its whole run, one ``PoissonSampledGaussianEvent`` of T steps, when it is created;
its row then records the progress the training task makes. A job cancelled or failed after
t < T steps is settled at the t steps that may have run (``accounting.services.ledger.settle``).
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

DATASET_KINDS = [("digits", "scikit-learn's 8×8 digits"), ("mnist", "MNIST IDX files in a directory"),
                 ("npz", "uploaded NPZ (arrays x, y)"), ("csv", "uploaded CSV (a label column)")]

JOB_STATUSES = [("queued", "queued"), ("running", "running"), ("succeeded", "succeeded"), ("failed", "failed"),
                ("cancelled", "cancelled")]
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")


class Dataset(models.Model):
    """A dataset jobs train on: the built-in digits, MNIST by path, or an admin's upload under the data directory.

    ``num_examples`` counts the training split (what DP-SGD samples from and q is relative to);
    ``num_test_examples`` the held-out split accuracy is measured on.
    """

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=8, choices=DATASET_KINDS)
    path = models.CharField(max_length=500, blank=True)
    label_column = models.CharField(max_length=100, blank=True)  # csv only
    num_examples = models.IntegerField()
    num_test_examples = models.IntegerField()
    input_shape = models.JSONField()
    num_classes = models.IntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    @property
    def scope(self) -> str:
        """The ledger scope of its lifetime cap (one partition, key "")."""
        return f"dataset:{self.pk}"


class TrainingJob(models.Model):
    """One DP-SGD run: its parameters, the ε charged for it, and its progress."""

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="jobs")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="training_jobs")
    model_name = models.CharField(max_length=16)
    epochs = models.IntegerField()
    expected_batch_size = models.IntegerField()
    learning_rate = models.FloatField()
    clip_norm = models.FloatField()
    noise_multiplier = models.FloatField()
    sampling_probability = models.FloatField()
    total_steps = models.IntegerField()
    delta = models.FloatField()
    target_epsilon = models.FloatField(null=True, blank=True)
    epsilon_micro = models.BigIntegerField()  # what the ledger charged: PLD ε(δ) of the whole run, in µε
    seed = models.BigIntegerField(null=True, blank=True)
    checkpoint_every = models.IntegerField()
    canaries = models.IntegerField(default=0)  # m canaries for the one-run audit (privacy.dpsgd.audit); 0: none

    status = models.CharField(max_length=10, choices=JOB_STATUSES, default="queued")
    cancel_requested = models.BooleanField(default=False)
    steps_done = models.IntegerField(default=0)  # the last checkpointed step
    epochs_done = models.IntegerField(default=0)
    epsilon_spent = models.FloatField(default=0.0)  # PLD ε(δ) of steps_done steps
    # the highest step any run of the job may have begun (its noise drawn): leased a checkpoint interval ahead,
    # and each run's own lease by its random token ({token: step}), so a stop can tell its own steps from others'
    steps_leased = models.IntegerField(default=0)
    leases = models.JSONField(default=dict)
    steps_charged = models.IntegerField(null=True, blank=True)  # set when a stopped job is settled: t of T
    epsilon_refunded_micro = models.BigIntegerField(default=0)  # the reservation's ε minus that of t steps
    # [[step, epsilon_spent, held-out loss, held-out accuracy], ...] at each checkpoint
    history = models.JSONField(default=list)
    device = models.CharField(max_length=32, blank=True)
    log = models.JSONField(default=list)
    test_accuracy = models.FloatField(null=True, blank=True)
    model_card = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(total_steps__gt=0), name="training_job_steps")]


# --- the export registry and its transparency log (issue 10) ----------------------------------------


class Contributor(models.Model):
    """A participant that may post signed exports: its Ed25519 public key and lifetime budget.

    Its budget is the lifetime cap of the ledger partition ``contributor:<id>`` (a PartitionCap row).
    ``pseudonym`` is ``signing.contributor_pseudonym`` of the key: what exports name it by.
    """

    name = models.CharField(max_length=100, unique=True)
    public_key = models.BinaryField(max_length=32)
    pseudonym = models.CharField(max_length=64, unique=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    @property
    def scope(self) -> str:
        """The ledger scope (and spender key) of its lifetime cap."""
        return f"contributor:{self.pk}"


class Export(models.Model):
    """An accepted export: the signed body exactly as signed (canonical JSON) and what it cost."""

    contributor = models.ForeignKey(Contributor, on_delete=models.PROTECT, related_name="exports")
    canonical_json = models.TextField()  # canonical_bytes of the whole body, signature included
    digest = models.CharField(max_length=64, unique=True)  # SHA-256 of the signed part's canonical bytes
    domain = models.CharField(max_length=200)
    segment_kinds = models.JSONField()
    observations = models.BigIntegerField()
    epsilon_claimed_micro = models.BigIntegerField()  # the proof's ε at its own δ, as the server recomputed it
    proof_delta = models.FloatField()
    epsilon_charged_micro = models.BigIntegerField()  # what the ledger charged (at the ledger's δ)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    aggregated_in = models.ForeignKey("AggregateRound", null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="exports")  # the round that took it (each export: one round)


class AggregateRound(models.Model):
    """One aggregation round of a domain: its AggregateWeights (spec segment 0x36), logged as an entry of its own.

    ``canonical_json`` is the logged entry exactly (what a verifier hashes); the other fields are read from it.
    """

    domain = models.CharField(max_length=200)
    number = models.IntegerField()  # 1, 2, ... per domain
    strategy = models.CharField(max_length=32)
    participation_count = models.IntegerField()
    dimension = models.IntegerField()
    canonical_json = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["domain", "number"], name="aggregate_round_domain_number")]


class LogEntry(models.Model):
    """One leaf of the transparency log: the entry's bytes, in log order (an export's body, or an aggregate)."""

    index = models.BigIntegerField(unique=True)
    entry = models.BinaryField()
    leaf_hash = models.BinaryField(max_length=32)
    export = models.OneToOneField(Export, null=True, on_delete=models.PROTECT, related_name="log_entry")
    aggregate = models.OneToOneField(AggregateRound, null=True, on_delete=models.PROTECT, related_name="log_entry")


class LogNode(models.Model):
    """The hash of the complete subtree over leaves [index·2^level, (index+1)·2^level) (level 0: leaf hashes)."""

    level = models.SmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["level", "index"], name="log_node_level_index")]


class TreeHead(models.Model):
    """Every signed tree head the server has served, kept so verify_log can detect truncation."""

    tree_size = models.BigIntegerField()
    root_hash = models.BinaryField(max_length=32)
    timestamp_ms = models.BigIntegerField()
    key_id = models.CharField(max_length=64)
    signature = models.BinaryField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tree_size", "key_id"], name="tree_head_size_key")]
