"""Checkpoints written atomically, and ``load_model``: a trained run back as a ready-to-use classifier."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .models import create_model, is_model

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_model", "Normalized", "CHECKPOINT_NAME",
           "evaluate_images", "BEST_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"  # --keep-best: the weights of the epoch with the lowest held-out loss
FORMAT = "gatedconv-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not fit; the message is one line."""


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync, then rename over ``path``: a crash leaves
    either the old file or the new one, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def writable_dir_problem(out: Path) -> str | None:
    """Create ``out`` (and its parents) and check a file can be written there: None when it can, else the
    reason in a few words (for the caller's one-line error)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return str(e.strerror or e)
    return None


def save_checkpoint(path: Path, state: dict) -> None:
    state = dict(state, format=FORMAT)
    atomic_write_bytes(Path(path), lambda f: torch.save(state, f))


def _checkpoint_path(path: str | Path) -> Path:
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def load_checkpoint(path: str | Path) -> dict:
    p = _checkpoint_path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no checkpoint there")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{p}: corrupt or unreadable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a gatedconv checkpoint")
    return state


class Normalized(nn.Module):
    """``net((x - mean) / std)`` for float images in [0, 1], shape (B, 3, H, W)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_from_checkpoint(state: dict, path: str | Path = "") -> nn.Module:
    name = state.get("model_name")
    if not is_model(name):
        raise CheckpointError(f"{path}: checkpoint names unknown model {name!r}")
    net = create_model(name, **state.get("model_kwargs", {}))
    try:
        net.load_state_dict(state["model_state"])
    except Exception as e:
        raise CheckpointError(f"{path}: weights do not fit model {name!r} ({str(e).splitlines()[0]})") from None
    return net


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a run directory (or checkpoint file) in eval mode. It maps float images in [0, 1],
    shape (B, 3, 32, 32), to logits: the training normalisation is included."""
    state = load_checkpoint(path)
    net = build_from_checkpoint(state, _checkpoint_path(path))
    model = Normalized(net, state["mean"], state["std"])
    return model.to(device).eval()


@torch.no_grad()
def evaluate_images(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
                    topk: Sequence[int] = (1, 5)) -> dict:
    """Top-k accuracy of a classifier that takes float images in [0, 1] (e.g. ``load_model``'s), fed uint8
    ``images`` (N, 3, H, W) / 255 in fp32, in order, ``batch_size`` at a time. The one evaluation used by the
    harness's final report and by ``scripts/evaluate.py``, so both print the same number."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    hits = torch.zeros(len(topk), dtype=torch.long)
    for i in range(0, len(labels), batch_size):
        x = images[i:i + batch_size].to(device).float().div_(255)
        y = labels[i:i + batch_size].to(device)
        pred = model(x).float().topk(max(topk), dim=1).indices
        for j, k in enumerate(topk):
            hits[j] += int((pred[:, :k] == y[:, None]).any(1).sum())
    model.train(was_training)
    n = max(len(labels), 1)
    return {f"top{k}": hits[j].item() / n for j, k in enumerate(topk)}
