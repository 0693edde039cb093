"""Data: official-layout reading, validation errors, batched augmentation, deterministic batches."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from gatedconv.augment import random_crop, random_flip
from gatedconv.data import DataError, TensorBatches, get_loaders, load_cifar10, read_batch_file

from conftest import make_tiny_cifar, write_batch


def test_pixel_and_label_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(7, 3072), dtype=np.uint8)
    labels = [3, 1, 4, 1, 5, 9, 2]
    write_batch(tmp_path / "b", data, labels)
    x, y = read_batch_file(tmp_path / "b")
    assert x.shape == (7, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == labels
    # official layout: the red plane, then green, then blue, each 32x32 row-major
    assert x[2, 0, 0, 5] == data[2, 5] and x[2, 1, 0, 0] == data[2, 1024] and x[2, 2, 31, 31] == data[2, 3071]


def test_load_full_layout(tiny_cifar):
    d = load_cifar10(str(tiny_cifar))
    assert d.train_x.shape == (200, 3, 32, 32) and d.test_x.shape == (40, 3, 32, 32)
    mean, std = d.mean_std()
    assert len(mean) == 3 and all(0 < s < 1 for s in std)
    # the batches folder itself works too
    assert len(load_cifar10(str(tiny_cifar / "cifar-10-batches-py")).train_y) == 200


def test_env_var(tiny_cifar, monkeypatch):
    monkeypatch.setenv("CIFAR10_DIR", str(tiny_cifar))
    assert len(load_cifar10().test_y) == 40


def test_missing_directory_is_one_line(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar10(str(tmp_path / "nowhere"))
    assert "--data-dir" in str(e.value) and "\n" not in str(e.value)


def _copy(tiny, tmp_path):
    root = make_tiny_cifar(tmp_path / "c", n_per_batch=8, n_test=8)
    return root, root / "cifar-10-batches-py"


def test_truncated_file_names_file(tmp_path):
    root, d = _copy(None, tmp_path)
    raw = (d / "data_batch_3").read_bytes()
    (d / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_3") as e:
        load_cifar10(str(root))
    assert "\n" not in str(e.value)


def test_corrupt_file_names_file(tmp_path):
    root, d = _copy(None, tmp_path)
    (d / "test_batch").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10(str(root))


@pytest.mark.parametrize("data, labels, match", [
    (np.zeros((4, 3000), np.uint8), [0, 1, 2, 3], r"shape \(N, 3072\)"),
    (np.zeros((4, 3072), np.float32), [0, 1, 2, 3], "uint8"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2, 10], "0..9"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2], "3 labels for 4 images"),
])
def test_bad_arrays(tmp_path, data, labels, match):
    root, d = _copy(None, tmp_path)
    write_batch(d / "data_batch_2", data, labels)
    with pytest.raises(DataError, match=match):
        load_cifar10(str(root))


def test_missing_key(tmp_path):
    root, d = _copy(None, tmp_path)
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(DataError, match="data_batch_1.*labels"):
        load_cifar10(str(root))


@given(b=st.integers(1, 6), pad=st.integers(0, 5), seed=st.integers(0, 1000))
def test_crop_keeps_shape_and_stays_in_bounds(b, pad, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 256, (b, 3, 32, 32), dtype=torch.uint8, generator=g)
    shifts = torch.randint(0, 2 * pad + 1, (b, 2), generator=g)
    y = random_crop(x, pad, shifts=shifts)
    assert y.shape == x.shape and y.dtype == x.dtype
    for i in range(b):
        dy, dx = (shifts[i] - pad).tolist()  # the window moves by (dy, dx): out[r, c] = in[r + dy, c + dx]
        r0, r1 = max(0, -dy), min(32, 32 - dy)
        c0, c1 = max(0, -dx), min(32, 32 - dx)
        assert torch.equal(y[i, :, r0:r1, c0:c1], x[i, :, r0 + dy:r1 + dy, c0 + dx:c1 + dx])
        # everything outside the source window is zero padding
        assert int(y[i].sum()) == int(y[i, :, r0:r1, c0:c1].sum())


def test_flip_is_a_flip():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5)
    y = random_flip(x, flips=torch.tensor([True, False]))
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1])
    g = torch.Generator().manual_seed(0)
    z = random_flip(torch.randint(0, 255, (200, 1, 2, 2), dtype=torch.uint8, generator=g), generator=g)
    assert z.shape == (200, 1, 2, 2)


def test_tensor_batches_deterministic_and_resumable(tiny_cifar):
    d = load_cifar10(str(tiny_cifar))
    mean, std = d.mean_std()
    it = TensorBatches(d.train_x, d.train_y, 16, mean=mean, std=std, train=True, augment=True, seed=3)
    it.set_epoch(2)
    full = list(it)
    assert len(full) == len(it) == 200 // 16
    it.set_epoch(2, start_step=5)
    tail = list(it)
    assert len(tail) == len(full) - 5
    for (xa, ya), (xb, yb) in zip(full[5:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    it.set_epoch(3)
    assert not torch.equal(next(iter(it))[1], full[0][1])
    # normalised with the data set's own statistics
    ev = TensorBatches(d.train_x, d.train_y, 200, mean=mean, std=std)
    x, _ = next(iter(ev))
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)


def test_shards_partition_the_epoch(tiny_cifar):
    d = load_cifar10(str(tiny_cifar))
    mean, std = d.mean_std()
    seen = []
    for rank in range(2):
        it = TensorBatches(d.train_x, torch.arange(200), 10, mean=mean, std=std, train=True, seed=1, shard=(rank, 2))
        seen.append(torch.cat([y for _, y in it]))
    assert len(set(seen[0].tolist()) & set(seen[1].tolist())) == 0
    assert len(seen[0]) == len(seen[1]) == 100


def test_get_loaders(tiny_cifar):
    train, test = get_loaders(32, augment=True, first_1000=True, data_dir=str(tiny_cifar))
    x, y = next(iter(train))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert sum(len(b[1]) for b in test) == 40


def test_rank_slices_rebuild_the_single_process_batches(tiny_cifar):
    d = load_cifar10(str(tiny_cifar))
    mean, std = d.mean_std()
    one = TensorBatches(d.train_x, d.train_y, 20, mean=mean, std=std, train=True, augment=True, seed=5)
    two = [TensorBatches(d.train_x, d.train_y, 10, mean=mean, std=std, train=True, augment=True, seed=5,
                         shard=(r, 2)) for r in range(2)]
    for (x, y), (x0, y0), (x1, y1) in zip(one, *two):
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
    assert len(one) == len(two[0]) == 10
