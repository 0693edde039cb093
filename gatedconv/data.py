"""CIFAR-10 as tensors: read and validate the official python pickle layout, keep each split as one uint8
tensor, and iterate batches deterministically (seed, epoch, step), augmented in batch (``gatedconv.augment``).

Why tensors and not a torchvision ``Dataset`` + PIL transforms: on a 2-core CPU the per-image Python and PIL
work of a classic ``DataLoader`` costs as much as the network itself; one gather per batch costs ~nothing.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch

from .augment import augment_batch, epoch_generator, random_crop, random_flip

__all__ = [
    "DataError", "CIFAR10", "resolve_data_dir", "load_cifar10", "read_batch_file", "TensorBatches", "get_loaders", "CLASSES", "write_fake_cifar", "write_batch_file",
]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILE = "test_batch"
_FOLDER = "cifar-10-batches-py"


class DataError(ValueError):
    """Bad or missing data; the message is one line that names the file or directory."""


@dataclass
class CIFAR10:
    """The data set as tensors: images uint8 (N, 3, 32, 32), labels int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    root: str = ""

    def mean_std(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """Per-channel mean and std of the training images in [0, 1] (the data set's own statistics; on the
        full CIFAR-10 training set they come out as the usual (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))."""
        x = self.train_x.float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3))
        return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())

    def split_validation(self, n_val: int = 5000, seed: int = 0) -> "CIFAR10":
        """Hold out ``n_val`` training images (a fixed random subset) as the evaluation split; the official
        test set is then not touched (use this for model selection)."""
        if not 0 < n_val < len(self.train_y):
            raise DataError(f"validation size must be in 1..{len(self.train_y) - 1}, got {n_val}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self.train_y), generator=g)
        val, tr = perm[:n_val], perm[n_val:]
        return CIFAR10(self.train_x[tr], self.train_y[tr], self.train_x[val], self.train_y[val], self.root)

    def fold(self, k: int, num_folds: int = 5, seed: int = 0) -> "CIFAR10":
        """Fold ``k`` of a ``num_folds``-fold split of the TRAINING set: train on the other folds, evaluate on
        this one (cross-validation never touches the official test set)."""
        if not 0 <= k < num_folds or num_folds < 2:
            raise DataError(f"fold must be in 0..{num_folds - 1} with at least 2 folds, got {k} of {num_folds}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self.train_y), generator=g)
        parts = perm.tensor_split(num_folds)
        ev = parts[k]
        tr = torch.cat([p for i, p in enumerate(parts) if i != k])
        return CIFAR10(self.train_x[tr], self.train_y[tr], self.train_x[ev], self.train_y[ev], self.root)

    def subset(self, n_train: int = 1000, n_test: Optional[int] = 1000) -> "CIFAR10":
        """The first ``n_train`` training (and ``n_test`` test) images, for quick prototyping."""
        nt = len(self.test_y) if n_test is None else n_test
        return CIFAR10(self.train_x[:n_train], self.train_y[:n_train], self.test_x[:nt], self.test_y[:nt], self.root)


def resolve_data_dir(data_dir: Optional[str] = None) -> Path:
    """``data_dir`` if given, else ``$CIFAR10_DIR``, else ``./data``."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("CIFAR10_DIR")
    return Path(env) if env else Path("data")


def _batches_dir(root: Path) -> Optional[Path]:
    """The folder that holds the batch files: ``root`` itself or ``root/cifar-10-batches-py``."""
    for cand in (root / _FOLDER, root):
        if (cand / _TEST_FILE).exists() or (cand / _TRAIN_FILES[0]).exists():
            return cand
    return None


def read_batch_file(path: Path) -> Tuple[torch.Tensor, torch.Tensor]:
    """One official batch file -> (images uint8 (N, 3, 32, 32), labels int64 (N,)); validates everything."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing") from None
    except Exception as e:  # truncated pickle, garbage, ...
        raise DataError(f"{path}: not a readable CIFAR-10 batch file ({type(e).__name__}: {e})".split("\n")[0]) from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: missing 'data' or 'labels' entry")
    try:
        import numpy as np
        data = np.asarray(data)
        labels = np.asarray(labels)
    except Exception as e:
        raise DataError(f"{path}: cannot read arrays ({e})") from None
    if data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must have shape (N, 3072), got {tuple(data.shape)}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for {data.shape[0]} images")
    if data.shape[0] == 0:
        raise DataError(f"{path}: holds no images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers, got {labels.dtype}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > 9:
        raise DataError(f"{path}: labels must be in 0..9, found values in {lo}..{hi}")
    x = torch.from_numpy(data.copy()).view(-1, 3, 32, 32)  # red plane, green, blue; each 32x32 row-major
    y = torch.from_numpy(labels.astype("int64"))
    return x, y


def _try_download(root: Path) -> bool:
    try:
        import torchvision
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        return True
    except Exception:
        return False


def load_cifar10(data_dir: Optional[str] = None, download: bool = True, expect_full: bool = False) -> CIFAR10:
    """Read CIFAR-10 from ``data_dir`` (or ``$CIFAR10_DIR``, or ``./data``) in the official python layout.

    Batch files of any length are accepted (small fixtures); with ``expect_full`` the official 50,000/10,000
    counts are required. When no data is found and ``download`` is set, torchvision's downloader is tried.
    """
    root = resolve_data_dir(data_dir)
    bdir = _batches_dir(root)
    if bdir is None and download and not (data_dir or os.environ.get("CIFAR10_DIR")):
        if _try_download(root):
            bdir = _batches_dir(root)
    if bdir is None:
        raise DataError(
            f"no CIFAR-10 data in {root} (expected {_FOLDER}/data_batch_1..5 and test_batch); "
            "pass --data-dir DIR or set CIFAR10_DIR to the folder that holds cifar-10-batches-py"
        )
    xs, ys = [], []
    for name in _TRAIN_FILES:
        x, y = read_batch_file(bdir / name)
        xs.append(x)
        ys.append(y)
    tx, ty = read_batch_file(bdir / _TEST_FILE)
    data = CIFAR10(torch.cat(xs), torch.cat(ys), tx, ty, str(bdir))
    if expect_full and (len(data.train_y) != 50000 or len(data.test_y) != 10000):
        raise DataError(f"{bdir}: expected 50000 training and 10000 test images, got {len(data.train_y)} and {len(data.test_y)}")
    return data


def write_batch_file(path: Path, data, labels, batch_label: bytes = b"batch") -> None:
    """Write one batch file in the official layout (data: (N, 3072) uint8 array, labels: N ints)."""
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": batch_label, b"labels": [int(v) for v in labels], b"data": data,
                     b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}, f)


def write_fake_cifar(root: str | Path, n_per_batch: int = 40, n_test: int = 40, seed: int = 0) -> Path:
    """A tiny, learnable CIFAR-10 look-alike in the official layout under ``root/cifar-10-batches-py``: each
    class has its own mean colour plus noise. For tests, smoke runs and ``benchmarks/stress_resume.py``."""
    import numpy as np
    rng = np.random.default_rng(seed)
    d = Path(root) / _FOLDER
    d.mkdir(parents=True, exist_ok=True)
    colours = rng.integers(30, 225, size=(10, 3))

    def sample(n):
        y = rng.integers(0, 10, size=n)
        img = colours[y][:, :, None, None] + rng.normal(0, 25, size=(n, 3, 32, 32))
        return np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072), y.tolist()

    for i, name in enumerate(_TRAIN_FILES, 1):
        x, y = sample(n_per_batch)
        write_batch_file(d / name, x, y, f"training batch {i} of 5".encode())
    x, y = sample(n_test)
    write_batch_file(d / _TEST_FILE, x, y, b"testing batch 1 of 1")
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f)
    return Path(root)


# ------------------------------------------------------------------------------------------------------
# Deterministic batch iteration


class TensorBatches:
    """Batches from uint8 tensors: shuffled, augmented and normalised in batch, on ``device``.

    Deterministic: epoch ``e`` uses a generator seeded with ``(seed, e)``, so its order and augmentation can be
    recreated from scratch (``set_epoch`` / ``start_step`` are how a resumed run skips what it already did).
    ``shard=(rank, world_size)`` gives each process its own slice of every global batch (see ``__iter__``).
    Yields ``(x float (B, 3, 32, 32) normalised, y int64 (B,))``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean: Tuple[float, ...], std: Tuple[float, ...], train: bool = False, augment: bool = False,
                 drop_last: Optional[bool] = None, seed: int = 0, device: str | torch.device = "cpu",
                 channels_last: bool = False, shard: Tuple[int, int] = (0, 1), pad: int = 4) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.train, self.augment = train, augment
        self.drop_last = train if drop_last is None else drop_last
        self.seed, self.epoch, self.start_step = seed, 0, 0
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.rank, self.world_size = shard
        self.pad = pad
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self._mean_dev = self.mean.to(self.device)
        self._std_dev = self.std.to(self.device)

    @property
    def num_examples(self) -> int:
        return len(self) * self.batch_size if self.world_size > 1 else len(self.labels)

    def __len__(self) -> int:
        if self.world_size > 1:  # every rank runs the same number of full steps of the global batch
            return len(self.labels) // (self.batch_size * self.world_size)
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        g = epoch_generator(self.seed, self.epoch)
        if self.train:
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        # draw this epoch's augmentation up front so step k's batch never depends on where we resumed
        crops = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g) if self.augment else None
        flips = (torch.rand(n, generator=g) < 0.5) if self.augment else None
        # with world_size W, rank r takes the r-th slice of each global batch of W * batch_size examples, so
        # W processes see exactly the batches one process would see at the same global batch size
        global_bs = self.batch_size * self.world_size
        for step in range(self.start_step, len(self)):
            lo = step * global_bs + self.rank * self.batch_size
            sl = slice(lo, min(lo + self.batch_size, n))
            idx = order[sl]
            x = self.images[idx]
            if self.augment:
                x = random_flip(random_crop(x, self.pad, shifts=crops[sl]), flips=flips[sl])
            yield self._finish(x, self.labels[idx])
        self.start_step = 0

    def _finish(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).float()
        x = (x - self._mean_dev) / self._std_dev
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)


# ------------------------------------------------------------------------------------------------------
# The classic API: torch DataLoaders


class _UInt8Dataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


class _Collate:
    """Stack uint8 images, augment the batch on tensors, normalise: the per-batch work of a DataLoader."""

    def __init__(self, mean, std, augment: bool) -> None:
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self.augment = augment

    def __call__(self, items: List[Tuple[torch.Tensor, torch.Tensor]]):
        x = torch.stack([i[0] for i in items])
        y = torch.stack([i[1] for i in items])
        if self.augment:
            x = augment_batch(x)
        return (x.float() - self.mean) / self.std, y


def get_loaders(batch_size: int, augment: bool = False, first_1000: bool = False,
                data_dir: Optional[str] = None, num_workers: int = 0, validation: bool = False):
    """``(train_loader, test_loader)`` as torch ``DataLoader``s yielding normalised float batches.

    ``first_1000`` keeps the first 1,000 training and test images; ``validation`` evaluates on a held-out
    5,000 of the training set (45,000 left for training) instead of the official test set.
    """
    data = load_cifar10(data_dir)
    mean, std = data.mean_std()
    if validation:
        data = data.split_validation(5000)
    if first_1000:
        data = data.subset(1000, 1000)
    train = torch.utils.data.DataLoader(_UInt8Dataset(data.train_x, data.train_y), batch_size=batch_size,
                                        shuffle=True, num_workers=num_workers, collate_fn=_Collate(mean, std, augment))
    test = torch.utils.data.DataLoader(_UInt8Dataset(data.test_x, data.test_y), batch_size=batch_size,
                                       shuffle=False, num_workers=num_workers, collate_fn=_Collate(mean, std, False))
    return train, test
