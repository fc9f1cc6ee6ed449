"""Datasets of poison jobs: digits, CIFAR-10 in torchvision's on-disk format, uploaded .npz."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nadcore.poison.datasets import (
    load_cifar10,
    load_dataset,
    load_digits,
    load_npz,
    readable_datasets,
)
from nadcore.poison.spec import DatasetRef


def test_digits_fixed_stratified_split():
    a, b = load_digits(), load_digits()
    assert a.x_train.shape == (1437, 1, 32, 32) and a.x_test.shape == (360, 1, 32, 32)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.num_classes == 10 and a.name == "digits"
    assert float(a.x_train.min()) >= 0 and float(a.x_train.max()) <= 1
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    counts = torch.bincount(a.y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified: ~36 per class
    limited = load_dataset(DatasetRef(name="digits", limit_train=100, limit_test=20))
    assert limited.x_train.shape[0] == 100 and limited.x_test.shape[0] == 20
    assert torch.equal(limited.x_train, a.x_train[:100])


def write_cifar_miniature(root: Path, per_batch: int = 6, num_test: int = 8,
                           ) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """torchvision's cifar-10-batches-py layout: pickled dicts with 'data' (n, 3072) uint8 in
    CHW order (1024 red, 1024 green, 1024 blue) and 'labels'; batches.meta with label_names."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_data, train_labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "data": data,
                         "labels": labels, "filenames": [f"{j}.png" for j in range(per_batch)]},
                        f)
        train_data.append(data)
        train_labels += labels
    test_data = rng.integers(0, 256, (num_test, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, num_test)]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "data": test_data,
                     "labels": test_labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                     "frog", "horse", "ship", "truck"],
                     "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return np.concatenate(train_data), train_labels, test_data, test_labels


def test_cifar10_miniature_in_torchvision_format(tmp_path):
    train, train_labels, test, test_labels = write_cifar_miniature(tmp_path)
    data = load_dataset(DatasetRef(name="cifar10"), data_dir=tmp_path)
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_test.shape == (8, 3, 32, 32)
    assert data.num_classes == 10 and data.name == "cifar10"
    # the pickled rows are CHW already: the loader's HWC -> CHW round trip must restore them
    expect = torch.from_numpy(train.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    assert torch.equal(data.x_train, expect)
    assert data.y_train.tolist() == train_labels and data.y_test.tolist() == test_labels
    assert torch.equal(data.x_test, torch.from_numpy(test.reshape(-1, 3, 32, 32) / 255).float())
    # torchvision's own class checks the md5s of the official archive: a miniature fails clearly
    with pytest.raises(FileNotFoundError, match="corrupted"):
        load_cifar10(tmp_path, verify_md5=True)


def test_readable_datasets_are_those_a_worker_can_load(tmp_path):
    """What a worker reports in its heartbeat: digits always (shipped with scikit-learn), cifar10
    once every file of the layout is there, and not while one is missing."""
    assert readable_datasets(tmp_path) == ["digits"]
    write_cifar_miniature(tmp_path)
    assert readable_datasets(tmp_path) == ["digits", "cifar10"]
    load_cifar10(tmp_path)  # what it reports, it loads
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    assert readable_datasets(tmp_path) == ["digits"]


def test_cifar10_missing_names_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="NADS_DATA_DIR"):
        load_dataset(DatasetRef(name="cifar10"), data_dir=tmp_path)
    write_cifar_miniature(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_cifar10(tmp_path)


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_upload_uint8_nhwc_and_float_nchw(tmp_path):
    rng = np.random.default_rng(1)
    x8 = rng.integers(0, 256, (20, 8, 6, 3), dtype=np.uint8)
    y = np.arange(20) % 4
    data = load_dataset(DatasetRef(upload="abc"), upload_path=_npz(tmp_path / "a.npz", x=x8, y=y))
    assert data.x_train.shape == (16, 3, 8, 6) and data.x_test.shape == (4, 3, 8, 6)
    assert data.num_classes == 4 and data.x_train.dtype == torch.float32
    # the seeded 80/20 split is a permutation of the upload
    both = torch.cat([data.x_train, data.x_test])
    full = torch.from_numpy(x8.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    order = torch.cat([data.y_train, data.y_test])
    assert sorted(order.tolist()) == sorted(y.tolist())
    assert torch.allclose(both.sum((1, 2, 3)).sort().values, full.sum((1, 2, 3)).sort().values)

    xf = rng.random((12, 1, 5, 5)).astype(np.float32)
    xt = rng.random((3, 1, 5, 5))
    data = load_npz(_npz(tmp_path / "b.npz", x=xf, y=np.arange(12) % 3, x_test=xt,
                         y_test=np.array([0, 1, 2])))
    assert torch.equal(data.x_train, torch.from_numpy(xf)) and data.x_test.shape == (3, 1, 5, 5)
    assert data.y_test.tolist() == [0, 1, 2] and data.num_classes == 3


@pytest.mark.parametrize(("arrays", "key"), [
    ({"x": np.zeros((4, 5, 5), np.uint8), "y": np.zeros(4, int)}, "x"),
    ({"x": np.full((4, 1, 5, 5), 1.5, np.float32), "y": np.zeros(4, int)}, "x"),
    ({"x": np.zeros((4, 1, 5, 5), np.int32), "y": np.zeros(4, int)}, "x"),
    ({"x": np.zeros((4, 5, 5, 1), np.uint8), "y": np.zeros(3, int)}, "y"),
    ({"x": np.zeros((4, 5, 5, 1), np.uint8), "y": np.array([0, 1, -1, 0])}, "y"),
    ({"x": np.zeros((4, 5, 5, 1), np.uint8), "y": np.zeros(4, np.float32)}, "y"),
    ({"x": np.zeros((4, 5, 5, 1), np.uint8), "y": np.zeros((4, 1), int)}, "y"),
    ({"x": np.zeros((4, 5, 5, 1), np.uint8), "y": np.array([0, 1, 0, 1]),
      "x_test": np.zeros((2, 5, 5, 1), np.uint8), "y_test": np.array([0, 2])}, "y_test"),
    ({"x": np.zeros((4, 5, 5, 1), np.uint8), "y": np.array([0, 1, 0, 1]),
      "x_test": np.zeros((2, 4, 5, 1), np.uint8), "y_test": np.array([0, 1])}, "x_test"),
    ({"x": np.zeros((4, 5, 5, 1), np.uint8), "y": np.array([0, 1, 0, 1]),
      "x_test": np.zeros((2, 5, 5, 1), np.uint8)}, "y_test"),
    ({"y": np.zeros(4, int)}, "x"),
])
def test_upload_errors_name_the_key(tmp_path, arrays, key):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=rf"^{key}:"):
        load_npz(path)


@pytest.mark.parametrize("test_labels", [None, [0, 0]])
def test_upload_with_one_class_is_refused(tmp_path, test_labels):
    """One label everywhere made a 1-output network, a loss of 0 and 100 % train, test and
    clean accuracy, reported as a fitted poison job without a warning (measured)."""
    arrays = {"x": np.zeros((10, 5, 5, 1), np.uint8), "y": np.zeros(10, int)}
    if test_labels is not None:
        arrays |= {"x_test": np.zeros((2, 5, 5, 1), np.uint8), "y_test": np.array(test_labels)}
    with pytest.raises(ValueError, match=r"^y: all 8 training labels are 0: a classifier needs "
                                         r"at least 2 classes" if test_labels is None else
                       r"^y: all 10 training labels are 0"):
        load_npz(_npz(tmp_path / "one.npz", **arrays))
