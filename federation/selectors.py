"""Reads of datasets and training jobs: rows, budgets, the files behind them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from django.conf import settings

from accounting.models import PartitionSpend
from accounting.selectors import partition_caps_micro
from federation.models import Dataset, TrainingJob
from privacy.dpsgd import datasets as readers

# Datasets without a test split of their own (digits, uploads) hold out this fraction of their
# examples: a fixed permutation (seed 0), so a dataset's split never changes between jobs.
HOLDOUT_DENOMINATOR = 5
HOLDOUT_SEED = 0


def data_dir() -> Path:
    """Where uploads are stored and MNIST may be registered from: ``TRAINING_DATA_DIR``, else VAR_DIR/datasets."""
    return Path(settings.TRAINING_DATA_DIR)


def job_dir(job: TrainingJob) -> Path:
    """A job's checkpoint, weights and model card."""
    return Path(settings.VAR_DIR) / "training" / f"job-{job.pk}"


def holdout_sizes(num_examples: int) -> tuple[int, int]:
    """(training, test) sizes of a dataset without a test split of its own."""
    test = num_examples // HOLDOUT_DENOMINATOR
    return num_examples - test, test


def holdout_split(full: readers.Dataset) -> tuple[readers.Dataset, readers.Dataset]:
    train_size, _ = holdout_sizes(len(full))
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(full))

    def part(indices, suffix):
        return readers.Dataset(f"{full.name}-{suffix}", full.features[indices], full.labels[indices], full.num_classes)

    return part(order[:train_size], "train"), part(order[train_size:], "test")


def read_dataset(dataset: Dataset) -> tuple[readers.Dataset, readers.Dataset]:
    """The dataset's (training, held-out test) splits as arrays."""
    if dataset.kind == "mnist":
        return readers.load_mnist(dataset.path, "train"), readers.load_mnist(dataset.path, "test")
    if dataset.kind == "digits":
        full = readers.load_digits()
    elif dataset.kind == "npz":
        full = readers.load_npz(dataset.path, name=dataset.name)
    else:
        full = readers.load_csv(dataset.path, label_column=dataset.label_column, name=dataset.name)
    return holdout_split(full)


def datasets() -> list[Dataset]:
    return list(Dataset.objects.order_by("name"))


def dataset_named(name: str) -> Dataset | None:
    return Dataset.objects.filter(name=name).first()


def dataset_budgets(rows: list[Dataset]) -> dict[int, tuple[int, int]]:
    """(lifetime cap, spent) in µε of each dataset's partition, in two queries."""
    scopes = {row.scope: row.pk for row in rows}
    caps = partition_caps_micro(scopes)
    spent = dict(PartitionSpend.objects.filter(scope__in=scopes, key="").values_list("scope", "spent_micro"))
    return {pk: (caps[scope], spent.get(scope, 0)) for scope, pk in scopes.items()}


def jobs() -> list[TrainingJob]:
    return list(TrainingJob.objects.select_related("dataset", "owner").order_by("-id"))


def job_by_id(job_id: int) -> TrainingJob | None:
    return TrainingJob.objects.select_related("dataset", "owner").filter(pk=job_id).first()


def cancel_requested(job_id: int) -> bool:
    return TrainingJob.objects.filter(pk=job_id, cancel_requested=True).exists()
