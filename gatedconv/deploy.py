"""Deployed forms: ``reparameterize(model)`` returns a new eval-mode model computing the same function at its
deployed cost (the trained model is untouched), in the manner of timm's ``reparameterize_model`` and RepVGG's
``switch_to_deploy``: walk the modules and let each gated block fuse itself (``GatedConv2d.reparameterize``),
then fold every eval-mode BatchNorm that directly follows a convolution into it.

* one-path blocks whose gate is identically 1 and constant-gate ``after_sum`` blocks -> one ``Conv2d``;
* input-gated ``after_sum`` blocks -> ``DynamicConv2d`` (K kernels mixed per sample, one convolution);
* ``per_path`` blocks stay as they are (P convolutions: the activation sits between each and the sum);
* an eval-mode ``BatchNorm2d`` whose only input is the output of a ``Conv2d`` used nowhere else -> folded into
  that ``Conv2d`` (likewise a ``DynamicConv2d`` without activation), the BatchNorm replaced by ``nn.Identity``.
  The pairs are found in the graph ``torch.fx`` traces from the model's ``forward`` (gated and dynamic blocks as
  leaves), so BatchNorms reached through a custom ``forward`` (torchvision's ResNet blocks) fold too; a model
  whose ``forward`` fx cannot trace (control flow on tensor values) gets the pairs next to each other in an
  ``nn.Sequential`` only.
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import List, Tuple

import torch
from torch import fx, nn

from .dynamic import DynamicConv2d, _bn_affine
from .layers import GatedConv2d

__all__ = ["DeployError", "reparameterize", "fold_conv_bn"]


class DeployError(ValueError):
    """A module that cannot be put into its deployed form; one line naming it."""


def reparameterize(model: nn.Module) -> nn.Module:
    """A deployed copy of ``model`` in eval mode (see the module docstring); a model without gated blocks or
    foldable BatchNorms comes back as an equal copy."""
    deployed = copy.deepcopy(model).eval()
    if isinstance(deployed, GatedConv2d):  # the model is one block
        return _fused(deployed, "the model").eval()
    _fuse_blocks(deployed, "")
    _fold_batchnorms(deployed)
    return deployed


def _fused(block: GatedConv2d, path: str) -> nn.Module:
    if type(block).forward is not GatedConv2d.forward:
        raise DeployError(f"cannot deploy {path} ({type(block).__name__}): it overrides GatedConv2d.forward, "
                          "so its fused form would not compute the same function")
    return block.reparameterize()


def _fuse_blocks(parent: nn.Module, prefix: str) -> None:
    for name, child in list(parent.named_children()):
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, GatedConv2d):
            setattr(parent, name, _fused(child, path))
        else:
            _fuse_blocks(child, path)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One ``Conv2d`` computing ``bn(conv(x))`` for an eval-mode ``bn``."""
    s, shift = _bn_affine(bn)
    fused = copy.deepcopy(conv)
    fused.weight.mul_(s.view(-1, *([1] * (conv.weight.dim() - 1))))
    bias = shift if conv.bias is None else conv.bias * s + shift
    fused.bias = nn.Parameter(bias)
    return fused


class _BlockLeafTracer(fx.Tracer):
    """Traces a model's ``forward`` with the gated and dynamic blocks as single calls (their own forward picks
    a form from the input's shape, which a symbolic trace cannot see)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (GatedConv2d, DynamicConv2d)) or super().is_leaf_module(m, qualname)


def _traced_pairs(model: nn.Module) -> List[Tuple[str, str]]:
    """(convolution, BatchNorm) module names where the BatchNorm's only input is the convolution's output, each
    called once and the convolution's output used by nothing else."""
    graph = _BlockLeafTracer().trace(model)
    calls = [n for n in graph.nodes if n.op == "call_module"]
    times = Counter(n.target for n in calls)
    pairs = []
    for node in calls:
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
                and times[node.target] == 1 and times[src.target] == 1):
            pairs.append((src.target, node.target))
    return pairs


def _sequential_pairs(model: nn.Module) -> List[Tuple[str, str]]:
    """(convolution, BatchNorm) module names next to each other in an ``nn.Sequential``."""
    pairs = []
    for prefix, seq in model.named_modules():
        if isinstance(seq, nn.Sequential):
            names = [f"{prefix}.{n}" if prefix else n for n, _ in seq.named_children()]
            pairs += list(zip(names, names[1:]))
    return pairs


def _fold_batchnorms(model: nn.Module) -> None:
    try:
        pairs = _traced_pairs(model)
    except Exception:  # fx raises many kinds (TraceError, TypeError, ...) for a forward it cannot trace
        pairs = _sequential_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or bn.running_mean is None:
            continue
        if type(conv) is nn.Conv2d:  # exact for any padding mode: the BatchNorm acts on the output
            _set_submodule(model, conv_name, fold_conv_bn(conv, bn))
        elif isinstance(conv, DynamicConv2d) and isinstance(conv.act, nn.Identity):
            conv.fold_batchnorm(bn)
        else:
            continue
        _set_submodule(model, bn_name, nn.Identity())


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
