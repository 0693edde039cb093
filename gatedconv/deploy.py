"""Deployed forms: ``reparameterize(model)`` returns a new eval-mode model computing the same function at its
deployed cost (the trained model is untouched), in the manner of timm's ``reparameterize_model`` and RepVGG's
``switch_to_deploy``: walk the modules and let each gated block fuse itself (``GatedConv2d.reparameterize``),
then fold every eval-mode BatchNorm that directly follows a convolution into it.

* one-path blocks whose gate is identically 1 and constant-gate ``after_sum`` blocks -> one ``Conv2d``;
* input-gated ``after_sum`` blocks -> ``DynamicConv2d`` (K kernels mixed per sample, one convolution);
* ``per_path`` blocks stay as they are (P convolutions: the activation sits between each and the sum);
* ``Conv2d -> BatchNorm2d`` next to each other in an ``nn.Sequential`` -> one ``Conv2d`` (likewise a
  ``DynamicConv2d`` without activation). BatchNorms reached only through a custom ``forward`` are left alone.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .dynamic import DynamicConv2d, _bn_affine
from .layers import GatedConv2d

__all__ = ["DeployError", "reparameterize", "fold_conv_bn"]


class DeployError(ValueError):
    """A module that cannot be put into its deployed form; one line naming it."""


def reparameterize(model: nn.Module) -> nn.Module:
    """A deployed copy of ``model`` in eval mode (see the module docstring); a model without gated blocks or
    foldable BatchNorms comes back as an equal copy."""
    deployed = copy.deepcopy(model).eval()
    _fuse_blocks(deployed, "")
    _fold_batchnorms(deployed)
    return deployed


def _fuse_blocks(parent: nn.Module, prefix: str) -> None:
    for name, child in list(parent.named_children()):
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, GatedConv2d):
            if type(child).forward is not GatedConv2d.forward:
                raise DeployError(f"cannot deploy {path} ({type(child).__name__}): it overrides GatedConv2d.forward, "
                                  "so its fused form would not compute the same function")
            setattr(parent, name, child.reparameterize())
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


def _fold_batchnorms(model: nn.Module) -> None:
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = seq._modules[first], seq._modules[second]
            if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or bn.running_mean is None:
                continue
            if isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros":
                seq._modules[first] = fold_conv_bn(conv, bn)
            elif isinstance(conv, DynamicConv2d) and isinstance(conv.act, nn.Identity):
                conv.fold_batchnorm(bn)
            else:
                continue
            seq._modules[second] = nn.Identity()
