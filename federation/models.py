"""Training datasets and DP-SGD training jobs.

A :class:`Dataset` is one lifetime-capped partition of the ledger, ``dataset:<id>``
(its cap is an ``accounting.PartitionCap`` row of that scope). A :class:`TrainingJob`
is charged its whole run, one ``PoissonSampledGaussianEvent``, when it is created;
its row then records the progress the training task makes.
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
    device = models.CharField(max_length=32, blank=True)
    log = models.JSONField(default=list)
    test_accuracy = models.FloatField(null=True, blank=True)
    model_card = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(total_steps__gt=0), name="training_job_steps")]
