"""Image datasets of poison jobs (docs/science.md, section 4): scikit-learn's digits (shipped
inside the package, for the demo and the tests), CIFAR-10 in torchvision's on-disk format from
the worker's datasets directory, and user-uploaded .npz files.

Every loader returns float32 images N x C x H x W in [0, 1] and int64 labels 0..K-1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nadcore.poison.spec import CIFAR10_FILES, CIFAR10_FOLDER, DATASET_INSTALL, DatasetRef

DIGITS_SIZE = 32  # digits are resized from 8 x 8 to the 32 x 32 inputs of the architectures
DIGITS_TEST = 360  # of 1,797 images; the split is stratified and fixed (seed DIGITS_SPLIT_SEED)
DIGITS_SPLIT_SEED = 0
UPLOAD_SPLIT_SEED = 0  # an upload without x_test: a seeded 80/20 split


@dataclass
class ImageDataset:
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64 in 0..K-1
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x_train.shape[1:])  # type: ignore[return-value]


def load_dataset(ref: DatasetRef, data_dir: str | Path | None = None,
                 upload_path: str | Path | None = None) -> ImageDataset:
    """The dataset a poison spec names, cut to `ref.limit_train` / `ref.limit_test` (first n).

    `data_dir` is the worker's datasets directory (the one holding `cifar-10-batches-py/`);
    without it, NADS_DATASETS_DIR or else NADS_DATA_DIR/datasets. `upload_path` is the stored
    .npz of `ref.upload`.
    """
    if ref.upload is not None:
        if upload_path is None:
            raise ValueError(f"dataset.upload: no file given for upload {ref.upload!r}")
        data = load_npz(upload_path, name=f"upload:{ref.upload}")
    elif ref.name == "digits":
        data = load_digits()
    elif ref.name == "cifar10":
        data = load_cifar10(data_dir)
    else:  # DatasetRef's validator makes this unreachable
        raise ValueError(f"dataset: unknown dataset {ref.name!r}")
    return limit(data, ref.limit_train, ref.limit_test)


def limit(data: ImageDataset, num_train: int | None, num_test: int | None) -> ImageDataset:
    """The first `num_train` training and `num_test` test images (None: all)."""
    return ImageDataset(data.x_train[:num_train], data.y_train[:num_train],
                        data.x_test[:num_test], data.y_test[:num_test], data.num_classes,
                        data.name)


# ---------------------------------------------------------------------------------------------
# digits


def _stratified_test_mask(y: np.ndarray, num_test: int, seed: int) -> np.ndarray:
    """Boolean mask of a test set of `num_test` samples with the class proportions of y
    (largest-remainder quotas), each class's members drawn from a seeded permutation. Own code
    rather than sklearn's train_test_split so the split cannot change with a library version."""
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * num_test / len(y)
    quota = np.floor(exact).astype(int)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: num_test - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c, q in zip(classes, quota, strict=True):
        members = np.nonzero(y == c)[0]
        mask[rng.permutation(members)[:q]] = True
    return mask


def load_digits() -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits (values 0..16, scaled to [0, 1]) resized to 32x32 by
    bilinear interpolation, 1 channel, 10 classes; a fixed stratified split of 1,437 training
    and 360 test images, each part in the original order."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear",
                      align_corners=False).clamp_(0.0, 1.0).contiguous()
    y = np.asarray(bunch.target, dtype=np.int64)
    test = torch.from_numpy(_stratified_test_mask(y, DIGITS_TEST, DIGITS_SPLIT_SEED))
    yt = torch.from_numpy(y)
    return ImageDataset(x[~test], yt[~test], x[test], yt[test], 10, "digits")


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def datasets_dir(data_dir: str | Path | None = None) -> Path:
    """`data_dir`, else NADS_DATASETS_DIR, else NADS_DATA_DIR/datasets (the service's layout),
    else ./var/datasets."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get("NADS_DATASETS_DIR"):
        return Path(os.environ["NADS_DATASETS_DIR"])
    return Path(os.environ.get("NADS_DATA_DIR") or "var") / "datasets"


def readable_datasets(data_dir: str | Path | None = None) -> list[str]:
    """The named datasets this process can load: digits (shipped with scikit-learn) and
    cifar10 when every file of `cifar-10-batches-py/` is a readable file in the datasets
    directory (`datasets_dir`). A worker reports them in its heartbeat row, so the API refuses
    at submission a job that names a dataset no connected worker holds. Presence, not
    content: a corrupt file still fails the job, with the loader's reason."""
    names = ["digits"]
    folder = datasets_dir(data_dir) / CIFAR10_FOLDER
    if all((folder / name).is_file() and os.access(folder / name, os.R_OK)
           for name in CIFAR10_FILES):
        names.append("cifar10")
    return names


def _cifar10_class(verify_md5: bool) -> type:
    from torchvision.datasets import CIFAR10

    if verify_md5:
        return CIFAR10

    class _TrustedCIFAR10(CIFAR10):
        """torchvision's CIFAR10 with the md5 checks replaced by presence checks.

        torchvision compares every batch file with the md5 of the official archive, which a
        generated miniature (the tests) cannot match. Only `_check_integrity` and the meta file
        check change; the parsing is torchvision's own.
        """

        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            import pickle

            path = Path(self.root) / self.base_folder / self.meta["filename"]
            if not path.is_file():
                raise RuntimeError(f"CIFAR-10 metadata file {path} not found")
            with open(path, "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return _TrustedCIFAR10


def load_cifar10(data_dir: str | Path | None = None, *, verify_md5: bool = False,
                 ) -> ImageDataset:
    """CIFAR-10 through torchvision's CIFAR10 parser (download=False): the directory must hold
    `cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta). uint8 HWC images become
    float32 CHW / 255.

    By default the files are only checked for presence (`_TrustedCIFAR10`), which lets the
    tests and demos use a generated miniature in the same format; the datasets directory is the
    operator's, and torchvision's parser plus the label check below reject malformed files.
    `verify_md5=True` uses torchvision's CIFAR10 as is, which insists on the md5s of the
    official archive."""
    root = datasets_dir(data_dir)
    folder = root / CIFAR10_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset cifar10: {folder} not found; "
                                f"{DATASET_INSTALL['cifar10']}")
    cls = _cifar10_class(verify_md5)
    try:
        train, test = cls(str(root), train=True), cls(str(root), train=False)
    except (RuntimeError, OSError, KeyError, ValueError, EOFError) as exc:
        raise FileNotFoundError(
            f"dataset cifar10: {folder} is incomplete or corrupted ({exc}); expected the files "
            "of cifar-10-python.tar.gz under NADS_DATASETS_DIR (default NADS_DATA_DIR/datasets)"
        ) from exc

    def images(ds: object) -> torch.Tensor:
        arr = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # type: ignore[attr-defined]
        return torch.from_numpy(arr).to(torch.float32).div_(255.0)

    def labels(ds: object) -> torch.Tensor:
        return torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))  # type: ignore[attr-defined]

    out = ImageDataset(images(train), labels(train), images(test), labels(test), 10, "cifar10")
    for what, x, y in (("training", out.x_train, out.y_train), ("test", out.x_test, out.y_test)):
        if len(y) != len(x) or (len(y) and (int(y.min()) < 0 or int(y.max()) > 9)):
            raise ValueError(f"dataset cifar10: the {what} batches in {folder} have "
                             f"{len(x)} images and {len(y)} labels, labels must be 0..9")
    return out


# ---------------------------------------------------------------------------------------------
# uploads


def _images(arr: np.ndarray, key: str) -> torch.Tensor:
    """uint8 N x H x W x C -> float32 N x C x H x W / 255; float N x C x H x W in [0, 1] as is."""
    if arr.ndim != 4:
        raise ValueError(f"{key}: expected a 4-D array (uint8 N x H x W x C or float "
                         f"N x C x H x W), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{key}: no images")
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))).float() / 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{key}: non-finite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"{key}: float images must lie in [0, 1], found [{lo:g}, {hi:g}]")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    raise ValueError(f"{key}: dtype {arr.dtype} is neither uint8 (N x H x W x C) nor float "
                     "(N x C x H x W in [0, 1])")


def _labels(arr: np.ndarray, key: str, num: int) -> torch.Tensor:
    if arr.ndim != 1:
        raise ValueError(f"{key}: expected a 1-D array of labels, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{key}: labels must be integers, got dtype {arr.dtype}")
    if len(arr) != num:
        x_key = "x" if key == "y" else "x_test"
        raise ValueError(f"{key}: {len(arr)} labels for {num} images in {x_key}")
    if arr.min() < 0:
        raise ValueError(f"{key}: label {int(arr.min())} is out of range (labels are 0..K-1)")
    return torch.from_numpy(arr.astype(np.int64))


def load_npz(path: str | Path, name: str = "upload") -> ImageDataset:
    """An uploaded .npz: `x` (uint8 N x H x W x C, or float N x C x H x W in [0, 1]) and `y`
    (integers 0..K-1, K = max(y) + 1, at least 2 classes among the training labels),
    optionally `x_test` and `y_test` (else a seeded 80/20 split). ValueErrors name the
    offending key."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"dataset upload: not a readable .npz file ({exc})") from exc
    with npz:
        keys = set(npz.files)
        for key in ("x", "y"):
            if key not in keys:
                raise ValueError(f"{key}: missing from the .npz (it has {sorted(keys) or 'none'})")
        if ("x_test" in keys) != ("y_test" in keys):
            missing = "y_test" if "x_test" in keys else "x_test"
            raise ValueError(f"{missing}: give x_test and y_test together")
        x = _images(npz["x"], "x")
        y = _labels(npz["y"], "y", x.shape[0])
        if "x_test" in keys:
            x_test = _images(npz["x_test"], "x_test")
            y_test = _labels(npz["y_test"], "y_test", x_test.shape[0])
        else:
            if x.shape[0] < 2:
                raise ValueError("x: at least 2 images are needed for a train/test split")
            perm = torch.from_numpy(np.random.default_rng(UPLOAD_SPLIT_SEED).permutation(len(y)))
            n_test = max(1, len(y) // 5)
            x_test, y_test = x[perm[:n_test]], y[perm[:n_test]]
            x, y = x[perm[n_test:]], y[perm[n_test:]]
    if x_test.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_test: images of shape {tuple(x_test.shape[1:])} (C, H, W), x has "
                         f"{tuple(x.shape[1:])}")
    if int(y.min()) == int(y.max()):  # one class: a 1-output network, 100 % for nothing
        raise ValueError(f"y: all {len(y)} training labels are {int(y[0])}: a classifier needs "
                         "at least 2 classes (with one, every accuracy is 100 % and means "
                         "nothing)")
    num_classes = int(y.max()) + 1
    if int(y_test.max()) >= num_classes:
        raise ValueError(f"y_test: label {int(y_test.max())} is out of range: y has labels "
                         f"0..{num_classes - 1}")
    return ImageDataset(x, y, x_test, y_test, num_classes, name)


__all__ = ["CIFAR10_FOLDER", "ImageDataset", "datasets_dir", "limit", "load_cifar10",
           "load_dataset", "load_digits", "load_npz", "readable_datasets"]
