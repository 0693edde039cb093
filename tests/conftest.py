"""Shared fixtures: a tiny CIFAR-10 in the official python pickle layout, and the Hypothesis CI profile."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))


def write_batch(path: Path, data: np.ndarray, labels, batch_label: bytes = b"test") -> None:
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": batch_label, b"labels": list(labels), b"data": data,
                     b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}, f)


def make_tiny_cifar(root: Path, n_per_batch: int = 40, n_test: int = 40, seed: int = 0) -> Path:
    """Write a learnable tiny CIFAR-10: each class has its own mean colour plus noise."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    colours = rng.integers(30, 225, size=(10, 3))

    def sample(n):
        y = rng.integers(0, 10, size=n)
        img = colours[y][:, :, None, None] + rng.normal(0, 25, size=(n, 3, 32, 32))
        return np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072), y.tolist()

    for i in range(1, 6):
        x, y = sample(n_per_batch)
        write_batch(d / f"data_batch_{i}", x, y, f"training batch {i} of 5".encode())
    x, y = sample(n_test)
    write_batch(d / "test_batch", x, y, b"testing batch 1 of 1")
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                                      b"horse", b"ship", b"truck"]}, f)
    return root


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    return make_tiny_cifar(tmp_path_factory.mktemp("cifar"))
