"""Checkpoints written atomically and read safely, and ``load_model``: a trained run back as a ready-to-use
classifier.

Safe: a checkpoint holds only tensors and plain Python values (dicts, lists, numbers, strings; the RNG states as
tensors), so it is read with ``torch.load(weights_only=True)``, which runs no code from the file. A checkpoint
of the older format (numpy RNG state pickled) is refused with a one-line error naming the conversion command,
``python -m gatedconv.checkpoint convert PATH``, to run on files you trust.
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .models import create_model, is_model

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_model", "Normalized", "CHECKPOINT_NAME",
           "BEST_NAME", "plain", "convert_checkpoint", "first_line"]

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
    """Write ``state`` atomically. A failed write (a full disk, say) leaves no partial file and raises a one-line
    :class:`CheckpointError` naming the path and what is intact."""
    path = Path(path)
    state = dict(state, format=FORMAT)
    try:
        atomic_write_bytes(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        intact = "the previous checkpoint there is intact" if path.exists() else "no checkpoint was written yet"
        reason = getattr(e, "strerror", None) or first_line(e)
        raise CheckpointError(f"cannot write checkpoint {path} ({reason}); {intact}") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _checkpoint_path(path: str | Path) -> Path:
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def plain(obj):
    """``obj`` with JSON's plain types only (tuples become lists, ``torch.__version__`` a str, ...): what a
    config must be to be saved in a checkpoint that ``weights_only=True`` can read."""
    return json.loads(json.dumps(obj, default=str))


def load_checkpoint(path: str | Path) -> dict:
    """Read a gatedconv checkpoint with ``torch.load(weights_only=True)``; one-line :class:`CheckpointError` when
    it is missing, corrupt, of the older pickled format (with the command that converts it) or not ours."""
    p = _checkpoint_path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no checkpoint there")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{p}: holds pickled Python objects that safe loading refuses (an older gatedconv "
                              f"checkpoint?); if you trust the file, convert it with: python -m gatedconv.checkpoint "
                              f"convert {p}") from None
    except Exception as e:
        raise CheckpointError(f"{p}: corrupt or unreadable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a gatedconv checkpoint")
    return state


def convert_checkpoint(path: str | Path) -> Path:
    """Rewrite an older-format checkpoint (pickled numpy / python RNG states, tuples in the config) in place in
    the safe format. Loads it with ``weights_only=False``, which runs code from the file: only for files you
    trust. Returns the path."""
    import numpy as np

    p = _checkpoint_path(path)
    state = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a gatedconv checkpoint")
    rng = state.get("rng")
    if rng is not None and isinstance(rng.get("numpy"), tuple):
        name, keys, pos, has_gauss, gauss = rng["numpy"]
        rng["numpy"] = {"name": name, "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)}
    if rng is not None and isinstance(rng.get("python"), tuple):
        version, values, gauss = rng["python"]
        rng["python"] = {"version": version, "state": torch.tensor(values, dtype=torch.int64), "gauss": gauss}
    for key in ("config", "model_kwargs", "history", "best", "results", "mean", "std"):
        if state.get(key) is not None:
            state[key] = plain(state[key])
    atomic_write_bytes(p, lambda f: torch.save(state, f))
    return p


def main(argv=None) -> int:
    """``python -m gatedconv.checkpoint convert PATH...``: convert older checkpoints to the safe format."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "convert":
        print("usage: python -m gatedconv.checkpoint convert PATH [PATH ...]  (only files you trust)", file=sys.stderr)
        return 2
    for path in args[1:]:
        try:
            print(f"converted {convert_checkpoint(path)}")
        except Exception as e:  # a corrupt or foreign file: one line, whatever torch.load raised
            print(f"error: {path}: {first_line(e)}", file=sys.stderr)
            return 1
    return 0


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


def load_model(path: str | Path, device: str | torch.device = "cpu", deploy: bool = False) -> nn.Module:
    """The trained model of a run directory (or checkpoint file) in eval mode. It maps float images in [0, 1],
    shape (B, 3, 32, 32), to logits: the training normalisation is included. ``deploy=True`` returns its deployed
    form (``gatedconv.reparameterize``: the same function, gated blocks fused, BatchNorms folded)."""
    state = load_checkpoint(path)
    net = build_from_checkpoint(state, _checkpoint_path(path))
    model = Normalized(net, state["mean"], state["std"]).to(device).eval()
    if deploy:
        from .deploy import reparameterize
        model = reparameterize(model)
    return model


if __name__ == "__main__":
    raise SystemExit(main())
