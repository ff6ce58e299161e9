"""Datasets for training, as numpy arrays: IDX (MNIST), NPZ and CSV files, scikit-learn's digits.

numpy only (no torch, no Django): the service can check an admin's upload without the
``[train]`` extra. Every malformed file raises :class:`DatasetError` with a message that
says what is wrong; NPZ files are read with ``allow_pickle=False`` (no code runs on load).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

__all__ = ["Dataset", "DatasetError", "read_idx", "load_mnist", "load_npz", "load_csv", "load_digits"]

Source = Union[str, Path, BinaryIO]


class DatasetError(ValueError):
    """A dataset file that cannot be read as one: truncated, wrong shape, non-numeric, bad labels."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """float32 features of shape (n, *input_shape) and int64 labels in [0, num_classes)."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])

    def __len__(self) -> int:
        return self.features.shape[0]


def _dataset(name: str, features, labels, num_classes: int | None = None) -> Dataset:
    """Check features and labels together and build the :class:`Dataset` (classes: max label + 1 unless given)."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim < 2 or features.shape[0] == 0:
        raise DatasetError(f"{name}: features must be a non-empty array of shape (n, ...), got {features.shape}")
    if labels.shape != (features.shape[0],):
        raise DatasetError(f"{name}: {features.shape[0]} examples but labels of shape {labels.shape}")
    if not (np.issubdtype(features.dtype, np.number) and not np.issubdtype(features.dtype, np.complexfloating)):
        raise DatasetError(f"{name}: features must be real numbers, got {features.dtype}")
    features = features.astype(np.float32)
    if not np.isfinite(features).all():
        raise DatasetError(f"{name}: features contain NaN or infinity")
    if not np.issubdtype(labels.dtype, np.number) or np.issubdtype(labels.dtype, np.complexfloating):
        raise DatasetError(f"{name}: labels must be integers, got {labels.dtype}")
    if not (np.isfinite(labels).all() and (labels == np.round(labels)).all() and (labels >= 0).all()):
        raise DatasetError(f"{name}: labels must be non-negative integers")
    labels = labels.astype(np.int64)
    num_classes = num_classes or int(labels.max()) + 1
    if labels.max() >= num_classes:
        raise DatasetError(f"{name}: label {int(labels.max())} outside [0, {num_classes})")
    if num_classes < 2:
        raise DatasetError(f"{name}: labels must name at least two classes")
    return Dataset(name=name, features=features, labels=labels, num_classes=num_classes)


# --- IDX (MNIST) --------------------------------------------------------------------------------

# IDX type byte → big-endian numpy dtype (LeCun et al., "THE MNIST DATABASE" file format).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open_maybe_gzip(path: Path) -> BinaryIO:
    with path.open("rb") as raw:
        magic = raw.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")


def _read_exactly(stream: BinaryIO, count: int, what: str, path: Path) -> bytes:
    try:
        data = stream.read(count)
    except (OSError, EOFError) as exc:  # a corrupt gzip stream
        raise DatasetError(f"{path.name}: unreadable ({exc})") from exc
    if len(data) != count:
        raise DatasetError(f"{path.name}: truncated {what} ({len(data)} of {count} bytes)")
    return data


def read_idx(path: Union[str, Path], limit: int | None = None) -> np.ndarray:
    """The array in an IDX file (gzipped or not); only its first ``limit`` items when given."""
    path = Path(path)
    with _open_maybe_gzip(path) as stream:
        zero0, zero1, type_code, ndim = _read_exactly(stream, 4, "header", path)
        if zero0 or zero1 or type_code not in _IDX_TYPES or ndim == 0:
            raise DatasetError(f"{path.name}: not an IDX file (bad magic number)")
        dims = list(np.frombuffer(_read_exactly(stream, 4 * ndim, "dimensions", path), dtype=">u4").astype(int))
        if limit is not None:
            dims[0] = min(dims[0], limit)
        dtype = np.dtype(_IDX_TYPES[type_code])
        data = _read_exactly(stream, math.prod(dims) * dtype.itemsize, "data", path)
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def load_mnist(directory: Union[str, Path], split: str = "train", limit: int | None = None) -> Dataset:
    """MNIST's ``train`` or ``test`` split from the four canonical IDX files, pixels scaled to [0, 1].

    Features have shape (n, 1, 28, 28); the files may be gzipped (``*.gz``) or not.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError("split must be 'train' or 'test'")
    directory = Path(directory)

    def find(kind: str) -> Path:
        for name in (f"{prefix}-{kind}-ubyte.gz", f"{prefix}-{kind}-ubyte"):
            if (directory / name).exists():
                return directory / name
        raise DatasetError(f"{directory}: no {prefix}-{kind}-ubyte[.gz]")

    images = read_idx(find("images-idx3"), limit)
    labels = read_idx(find("labels-idx1"), limit)
    if images.ndim != 3:
        raise DatasetError(f"MNIST images must be (n, rows, cols), got {images.shape}")
    features = (images.astype(np.float32) / 255.0)[:, None, :, :]
    return _dataset(f"mnist-{split}", features, labels, num_classes=10)


# --- uploads: NPZ and CSV -----------------------------------------------------------------------


def load_npz(source: Source, name: str = "npz") -> Dataset:
    """An NPZ archive with arrays ``x`` (features, shape (n, ...)) and ``y`` (integer labels, shape (n,))."""
    try:
        with np.load(source, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise DatasetError(f"{name}: NPZ needs arrays 'x' and 'y', missing {sorted(missing)}")
            features, labels = archive["x"], archive["y"]
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError) as exc:  # not a zip, a pickled object array, a bad member
        raise DatasetError(f"{name}: not a readable NPZ file ({exc})") from exc
    return _dataset(name, features, labels)


def load_csv(source: Source, label_column: str = "label", name: str = "csv") -> Dataset:
    """A CSV file with a header row: the ``label_column`` holds integer labels, every other column a feature."""
    try:
        if isinstance(source, (str, Path)):
            text = Path(source).read_text(encoding="utf-8")
        else:
            text = source.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{name}: not UTF-8 text") from exc
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if len(rows) < 2:
        raise DatasetError(f"{name}: needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    if label_column not in header:
        raise DatasetError(f"{name}: no column {label_column!r} in the header")
    if len(header) < 2:
        raise DatasetError(f"{name}: needs at least one feature column besides {label_column!r}")
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DatasetError(f"{name}: line {line} has {len(row)} fields, the header {len(header)}")
    try:
        table = np.array(body, dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(f"{name}: a value is not a number ({exc})") from exc
    label_index = header.index(label_column)
    return _dataset(name, np.delete(table, label_index, axis=1), table[:, label_index])


# --- the embedded default -----------------------------------------------------------------------


def load_digits() -> Dataset:
    """scikit-learn's 8×8 digits (1797 images, shipped with the package: no network), scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return _dataset("digits", (digits.images / 16.0)[:, None, :, :], digits.target, num_classes=10)
