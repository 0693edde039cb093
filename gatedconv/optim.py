"""Optimisers and learning-rate schedules beyond ``torch.optim``'s: the fast recipe's decoupled Nesterov SGD
(airbench94, after Page's "How to train your ResNet") and its triangular schedule; Muon (momentum orthogonalised
by Newton-Schulz, Jordan et al. 2024) and ``MuonWithAdam``, which gives the rest of a network to Adam.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from .speedrun import SpeedrunConfig

__all__ = ["lr_factor", "group_lr_factor", "build_optimizer", "orthogonalize", "Muon", "MuonWithAdam", "MuonWithSGD",
           "muon_param_groups"]


def lr_factor(step: int, total_steps: int, warmup_frac: float = 0.23, start: float = 0.2, end: float = 0.07) -> float:
    """airbench94's triangular schedule: linear ``start -> 1`` over the first ``warmup_frac`` of the steps, then
    linear ``1 -> end`` to the last step."""
    warm = int(total_steps * warmup_frac)  # 0: no warm-up, a linear fall 1 -> end (airbench94_muon)
    if step < warm:
        f = step / warm
        return start * (1 - f) + f
    f = (step - warm) / max(total_steps - warm, 1)
    return (1 - f) + end * f


def _param_split(model: nn.Module) -> dict:
    """The trainable parameters by role: ``bn_bias`` (BatchNorm biases), ``whiten_bias`` (the whitening stem's
    bias, when its weight is frozen), ``head`` (the classifier ``model.head``), ``other`` (filters, gates, the rest).
    BatchNorm scales and the whitening weight do not train (``requires_grad`` is False) and are left out."""
    bn_bias = [mod.bias for mod in model.modules()
               if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.bias is not None and mod.bias.requires_grad]
    stem, head = getattr(model, "stem", None), getattr(model, "head", None)
    whiten_bias = ([stem.bias] if stem is not None and stem.bias is not None and not stem.weight.requires_grad
                   else [])
    head_params = [p for p in head.parameters() if p.requires_grad] if isinstance(head, nn.Module) else []
    taken = {id(p) for p in bn_bias + whiten_bias + head_params}
    other = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    return {"bn_bias": bn_bias, "whiten_bias": whiten_bias, "head": head_params, "other": other}


def build_optimizer(model: nn.Module, cfg: "SpeedrunConfig") -> torch.optim.Optimizer:
    """Nesterov SGD on a summed loss (and Muon on the convolution filters with ``cfg.optimizer == "muon"``).

    Groups (each keeps its undecayed ``base_lr`` for the schedule, and its ``name``): ``bn_bias``,
    ``whiten_bias`` (frozen after ``whiten_bias_epochs`` by the train loop), ``head``, ``other`` (gates and, with
    SGD, the path kernels) and, with Muon, ``muon`` (every trained 4-D filter, at ``cfg.muon_lr`` /
    ``cfg.muon_momentum``, ``cfg.muon_ns_steps`` Newton-Schulz steps, ``cfg.muon_normalize``; no weight decay).

    ``cfg.lr_form == "decoupled"`` (airbench94, after Page's "How to train your ResNet 5"): ``cfg.lr`` is the
    step size per 1024 examples, independent of momentum, and ``cfg.weight_decay`` the decay per 1024 examples,
    independent of the lr. With Nesterov momentum m, steady gradients give steps 1 + 1 / (1 - m) times the
    gradient, so PyTorch's lr is ``cfg.lr / (1024 (1 + 1 / (1 - m)))``, times ``bias_scaler`` (64) for the
    BatchNorm biases; PyTorch multiplies its weight decay by the lr, so it is given as ``decay / lr`` per group.

    ``cfg.lr_form == "direct"`` (airbench94_muon): PyTorch lrs for the summed loss, ``cfg.bias_lr`` for both
    kinds of bias and ``cfg.head_lr`` for the head, and a decay per step of ``cfg.decay_per_example`` times the
    batch size. Gates (which airbench94_muon does not have) keep the decoupled form's lr: the rate the gated fast
    recipe was tuned with.
    """
    m = cfg.momentum
    kilostep_scale = 1024 * (1 + 1 / (1 - m))
    lr = cfg.lr / kilostep_scale
    if cfg.lr_form == "direct":
        decay = cfg.decay_per_example * cfg.batch_size  # per step, in units of the weights
        rates = {"bn_bias": cfg.bias_lr, "whiten_bias": cfg.bias_lr, "head": cfg.head_lr, "other": lr}
    else:
        decay = cfg.weight_decay * cfg.batch_size / kilostep_scale
        rates = {"bn_bias": lr * cfg.bias_scaler, "whiten_bias": lr, "head": lr, "other": lr}
    split = _param_split(model)
    filters = [p for p in split["other"] if p.ndim == 4] if cfg.optimizer == "muon" else []
    if filters:
        split["other"] = [p for p in split["other"] if p.ndim != 4]
    groups = [dict(params=params, lr=rates[name], weight_decay=decay / rates[name], momentum=m, nesterov=True,
                   muon=False, name=name) for name, params in split.items()]
    if cfg.optimizer == "muon":
        # the convolution filters to Muon (its update ignores the loss's scale, so the summed loss needs no
        # rescaling); gates, head and biases keep their SGD groups: one optimiser, one schedule
        groups.append(dict(params=filters, lr=cfg.muon_lr, momentum=cfg.muon_momentum, nesterov=True,
                           weight_decay=0.0, muon=True, ns_steps=cfg.muon_ns_steps, normalize=cfg.muon_normalize,
                           name="muon"))
        opt = MuonWithSGD(groups)
    else:
        opt = torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=m, nesterov=True)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    return opt


def group_lr_factor(group: dict, step: int, total_steps: int, cfg: "SpeedrunConfig", steps_per_epoch: int) -> float:
    """The schedule's factor for one param group at ``step``: :func:`lr_factor` for every group, except the
    whitening bias with ``cfg.whiten_bias_lr_decay`` (airbench94_muon), whose lr falls linearly to 0 over the
    ``whiten_bias_epochs`` it trains."""
    if cfg.whiten_bias_lr_decay and group.get("name") == "whiten_bias":
        return max(0.0, 1 - step / max(cfg.whiten_bias_epochs * steps_per_epoch, 1))
    return lr_factor(step, total_steps, cfg.warmup_frac, cfg.lr_start, cfg.lr_end)


# ------------------------------------------------------------------------------------------------------
# Muon


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """An approximately orthogonal matrix with ``g``'s singular vectors: ``U V^T`` for ``g = U S V^T``, by the
    quintic Newton-Schulz iteration ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` and the coefficients
    ``(a, b, c) = (3.4445, -4.7750, 2.0315)`` of Muon (Jordan et al., 2024), which push every singular value of
    the normalised ``g`` into roughly [0.7, 1.2] in five steps instead of converging exactly (cheaper, and as
    good for the update). Runs in bf16 like the original (the iteration is robust to it); ``g`` is 2-D."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = g.shape[0] > g.shape[1]
    x = (g.T if tall else g).bfloat16()
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.T  # the smaller Gram matrix: rows <= columns here
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


def _muon_update(group: dict, state) -> None:
    """Muon's step for the parameters of one param group (see :class:`Muon`)."""
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.ndim < 2:
            raise ValueError(f"Muon updates >= 2-D weights only, got a parameter of shape {tuple(p.shape)}")
        st = state[p]
        if "momentum_buffer" not in st:
            st["momentum_buffer"] = torch.zeros_like(p)
        buf = st["momentum_buffer"]
        buf.mul_(group["momentum"]).add_(p.grad)
        g = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
        if group.get("normalize"):  # airbench94_muon: hold each filter bank at norm sqrt(C_out)
            norm = p.norm()
            if norm > 0:  # a zero-initialised bank (the gated network's extra paths) starts from its first update
                p.mul_(len(p) ** 0.5 / norm)
        update = orthogonalize(g.reshape(len(g), -1), group["ns_steps"]).view_as(p)
        scale = max(1.0, update.shape[0] / update[0].numel()) ** 0.5
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-group["lr"] * scale)


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-schulz (Muon; Jordan et al., 2024, as used in the airbench94 and
    modded-nanoGPT speed records), for the weight matrices and convolution filters of a network.

    Per parameter: ``buf <- momentum * buf + grad``; the update direction is ``grad + momentum * buf`` (Nesterov)
    or ``buf``, reshaped to 2-D (a filter bank (C_out, C_in, k, k) becomes (C_out, C_in k k)), orthogonalised
    (:func:`orthogonalize`) and scaled by ``sqrt(max(1, rows / cols))`` so tall and wide matrices take steps of
    the same size per element; then ``p <- p * (1 - lr * weight_decay) - lr * scale * update``. With
    ``normalize`` (airbench94_muon) each weight is first rescaled to norm ``sqrt(rows)``, so its size stays fixed
    and the lr sets the angle of each step (a weight that is still all zeros is left as it is).

    Muon is meant for >= 2-D weights only; give the biases, norms and the classifier head to another optimiser
    (``muon_param_groups`` splits a model that way, for :class:`MuonWithAdam`).
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5, normalize: bool = False) -> None:
        if not lr > 0 or not 0 <= momentum < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(f"Muon needs lr > 0, 0 <= momentum < 1, weight_decay >= 0, ns_steps >= 1; got {lr}, "
                             f"{momentum}, {weight_decay}, {ns_steps}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      ns_steps=ns_steps, normalize=normalize))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update(group)
        return loss

    def _update(self, group: dict) -> None:
        _muon_update(group, self.state)


def muon_param_groups(model: nn.Module, head: Optional[nn.Module] = None) -> tuple:
    """``(muon_params, other_params)``: the >= 2-D weights of the body for Muon; biases, norm parameters and the
    ``head``'s weights (the last ``nn.Linear`` when not given: a classifier is not a hidden layer) for the other
    optimiser. Frozen parameters are left out."""
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    muon, other = [], []
    for p in model.parameters():
        if p.requires_grad:
            (muon if p.ndim >= 2 and id(p) not in head_ids else other).append(p)
    return muon, other


class MuonWithAdam(Muon):
    """One optimiser object (one state dict, one scheduler) for a whole model: :class:`Muon` on the groups marked
    ``muon=True``, Adam(W) on the others. A learning-rate scheduler scales every group's ``lr`` alike."""

    def __init__(self, muon_params, other_params, *, muon_lr: float = 0.02, momentum: float = 0.95,
                 lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = False) -> None:
        groups = [dict(params=list(muon_params), lr=muon_lr, muon=True),
                  dict(params=list(other_params), lr=lr, muon=False)]
        torch.optim.Optimizer.__init__(self, [g for g in groups if g["params"]],
                                       dict(momentum=momentum, nesterov=True, ns_steps=5, betas=betas, eps=eps,
                                            weight_decay=weight_decay, decoupled=decoupled))

    def _update(self, group: dict) -> None:
        if group["muon"]:
            _muon_update(group, self.state)
        else:
            self._adam(group)

    def _adam(self, group: dict) -> None:
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            if group["weight_decay"] and not group["decoupled"]:
                g = g.add(p, alpha=group["weight_decay"])  # Adam's L2 form, as torch.optim.Adam
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros(())
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            state["step"] += 1
            t = float(state["step"])
            state["exp_avg"].lerp_(g, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
            if group["weight_decay"] and group["decoupled"]:
                p.mul_(1 - group["lr"] * group["weight_decay"])
            p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1 ** t))


class MuonWithSGD(Muon):
    """:class:`Muon` on the groups marked ``muon=True``, Nesterov SGD (``torch.optim.SGD``'s update: coupled weight
    decay, ``buf <- m buf + g``, step ``g + m buf``) on the others; every group carries its own ``lr``,
    ``momentum`` and ``weight_decay``. The fast recipe's ``--opt muon``: Muon on the convolution filters, its
    decoupled SGD groups for the rest."""

    def __init__(self, groups: list) -> None:
        torch.optim.Optimizer.__init__(self, [g for g in groups if g["params"]],
                                       dict(momentum=0.9, nesterov=True, ns_steps=5, normalize=False, weight_decay=0.0,
                                            muon=False))

    def _update(self, group: dict) -> None:
        if group["muon"]:
            _muon_update(group, self.state)
            return
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
            st = self.state[p]
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = g.clone()  # torch.optim.SGD's first step: the buffer is the gradient
            else:
                st["momentum_buffer"].mul_(group["momentum"]).add_(g)
            step = g.add(st["momentum_buffer"], alpha=group["momentum"]) if group["nesterov"] else st["momentum_buffer"]
            p.add_(step, alpha=-group["lr"])
