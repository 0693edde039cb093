"""Shared fixtures: a tiny CIFAR-10 in the official python pickle layout, and the Hypothesis profiles."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# "ci" (the default): the same 25 examples per property on every run, so a failure reproduces; "thorough": 200
# new random examples per property on each run, to look for failures the fixed examples miss (a failure prints
# the @reproduce_failure line that replays it); "dev": 10 random examples, for a quick run while editing.
# docs/usage.md, "Running the tests", documents them.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=200, deadline=None, derandomize=False, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))


from gatedconv.data import write_batch_file as write_batch  # noqa: E402  (re-exported for the tests)
from gatedconv.data import write_fake_cifar as make_tiny_cifar  # noqa: E402


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny tensors through many small operations: a second thread gains nothing
    there, and on a busy 2-core machine OpenMP threads waiting for each other made such tests 10-100x slower (and
    one thread keeps the arithmetic identical from run to run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    return make_tiny_cifar(tmp_path_factory.mktemp("cifar"))
