"""``convert``: put gated blocks in place of the ``nn.Conv2d`` modules of any model.

Each chosen convolution becomes a ``GatedConv2d`` with the same geometry (kernel, stride, padding, dilation, groups,
bias, padding mode) and no activation of its own (``act_layer=nn.Identity``), so the model's BatchNorms and
activations that follow it work as before. Which convolutions: a name filter (``include`` / ``exclude``: fnmatch
patterns, where ``"layer4"`` also stands for everything under ``layer4``, or a predicate ``(name, module) ->
bool``) and ``min_kernel_size`` (``3`` leaves the 1x1 convolutions alone). What cannot be converted is left as it
is and named in the report with the reason: a subclass of ``nn.Conv2d`` (its forward may differ), another kind of
convolution (transposed, 1-D, 3-D), a convolution with hooks, or a geometry the block refuses.

``init="upcycle"`` (the default) makes the converted model compute exactly the original's function at conversion,
whatever the gate: each of the K path kernels is a copy of the trained kernel (bias likewise), and

* a softmax gate (the default) keeps its own random initialisation: its weights sum to one for every input, so the
  mix of K equal kernels is the kernel, and because the weights differ between paths and samples the copies get
  different gradients from the first step (the gate itself from the second, once the copies differ);
* a ReLU or sigmoid gate starts uniform: its last layer's weights zero and its bias chosen so that every path is
  weighted ``c`` for every input (ReLU: bias ``1/K``; sigmoid: ``-log(K - 1)``; ``c = 1/K``, except a one-path
  sigmoid gate: bias 0, ``c = 1/2``), and the copies are scaled by ``1 / (K c)``, so ``sum_k c W / (K c) = W``
  (the constant gate is uniform by definition). Identical copies under a uniform gate would stay identical for
  ever (equal gradients, and a zero gradient for the gate), so each copy also gets a perturbation (``noise`` times
  the kernel's RMS) and the perturbations sum to zero over the copies: weighted alike, they leave the mixed kernel,
  and so the function, unchanged, while the paths now differ and the gate gets a gradient. The copies move apart
  slowly this way (the gate's gradient is proportional to the perturbation): prefer the softmax gate for upcycling.

``init="fresh"`` keeps the new blocks' own initialisation (a new block, nothing copied).
"""
from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import Gate, GatedConv2d

__all__ = ["INITS", "Conversion", "ConversionReport", "convert"]

INITS = ("upcycle", "fresh")

Filter = str | Iterable[str] | Callable[[str, nn.Module], bool] | None


@dataclass(frozen=True)
class Conversion:
    """One convolution of the model: its name (the first, for a module used at several places), its class, whether
    it was converted, and what it became or why it was left alone."""

    name: str
    kind: str
    converted: bool
    note: str


@dataclass
class ConversionReport:
    """What ``convert`` did, one ``Conversion`` per convolution-like module (``str(report)`` prints it)."""

    entries: list[Conversion] = field(default_factory=list)

    @property
    def converted(self) -> list[str]:
        """Names of the converted convolutions, in model order."""
        return [e.name for e in self.entries if e.converted]

    @property
    def skipped(self) -> dict[str, str]:
        """Name -> why it was left alone."""
        return {e.name: e.note for e in self.entries if not e.converted}

    def __str__(self) -> str:
        width = max((len(e.name) for e in self.entries), default=0)
        lines = [f"converted {len(self.converted)} of {len(self.entries)} convolutions"]
        lines += [f"  {'converted ' if e.converted else 'left alone'}  {e.name or '(the model)':<{width}}  {e.kind}: "
                  f"{e.note}" for e in self.entries]
        return "\n".join(lines)


def convert(
    model: nn.Module,
    *,
    include: Filter = None,
    exclude: Filter = None,
    min_kernel_size: int = 1,
    num_paths: int = 4,
    gate: str = "softmax",
    temperature: float = 1.0,
    rd_ratio: float | None = None,
    activation: str = "after_sum",
    impl: str = "auto",
    init: str = "upcycle",
    noise: float = 0.01,
    inplace: bool = False,
) -> tuple[nn.Module, ConversionReport]:
    """Replace the ``nn.Conv2d`` modules of ``model`` by gated blocks; returns ``(model, report)``.

    Args:
        model: any module (the model itself may be a ``Conv2d``).
        include: convert only these convolutions: an fnmatch pattern or a list of them, matched against the
            module's name (``"layer1.*"``; ``"layer1"`` also matches everything under ``layer1``), or a predicate
            ``(name, module) -> bool``. None: every one.
        exclude: leave these alone (same forms); ``exclude=["conv1"]`` keeps a ResNet's stem plain.
        min_kernel_size: leave alone convolutions whose kernel is smaller on both sides (``3``: the 1x1 ones).
        num_paths: K, the paths (kernels) of each block; 4 as in Dynamic Convolution.
        gate, temperature, rd_ratio, activation, impl: the blocks' (``GatedConv2d``); the default is the
            CondConv / Dynamic Convolution form: a softmax over K kernels mixed before one (here: no) activation.
        init: ``"upcycle"`` (the model's function kept exactly at conversion; see the module docstring) or
            ``"fresh"`` (new blocks' own initialisation).
        noise: under a gate that starts uniform (ReLU, sigmoid, constant), the zero-sum perturbation of the upcycled
            copies, relative to each kernel's RMS (0: exact copies, which a uniform gate never pulls apart).
        inplace: change ``model`` itself; by default a converted copy is returned and ``model`` is untouched.

    A pattern that matches no convolution, a filter of another type, or a bad block argument is a
    ``ValueError`` (one line) before anything is changed.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if isinstance(min_kernel_size, bool) or not isinstance(min_kernel_size, int) or min_kernel_size < 1:
        raise ValueError(f"min_kernel_size must be an int >= 1, got {min_kernel_size!r}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    block_kwargs = dict(num_paths=num_paths, gate=gate, temperature=temperature, rd_ratio=rd_ratio,
                        activation=activation, impl=impl, act_layer=nn.Identity)
    with torch.device("meta"):  # the block's own one-line errors for a bad argument, before any work (meta: no
        GatedConv2d(1, 1, 1, **block_kwargs)  # random numbers drawn, so "fresh" blocks draw what a new block would)

    found = _convolutions(model)
    names = [n for n, _ in found]
    keep = _matcher(include, "include", names)
    drop = _matcher(exclude, "exclude", names)
    if not inplace:
        model = copy.deepcopy(model)
        found = _convolutions(model)

    places = _places(model)
    report = ConversionReport()
    for name, module in found:
        kind = type(module).__name__
        reason = _why_not(name, module, keep, drop, min_kernel_size)
        block = None
        if reason is None:
            try:
                block = _gated_like(module, block_kwargs, paths_filled_later=init == "upcycle")
            except ValueError as e:  # a geometry the block refuses (e.g. an even kernel with padding "same")
                reason = str(e)
        if block is None:
            report.entries.append(Conversion(name, kind, False, reason))
            continue
        if init == "upcycle":
            _upcycle(block, module, noise)
        if module is model:
            model = block
        for parent, attr in places.get(id(module), []):  # every place it is held: a module may be shared
            setattr(parent, attr, block)
        k = "x".join(map(str, module.kernel_size))
        report.entries.append(Conversion(name, kind, True, (
            f"GatedConv2d({module.in_channels}, {module.out_channels}, {k}"
            f"{f', groups={module.groups}' if module.groups != 1 else ''}), {block.num_paths} paths, "
            f"gate={gate!r}, {init}")))
    return model, report


def _convolutions(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(first name, module) of every convolution-like module, in model order; a gated block counts as one (its
    path convolutions are its own)."""
    out, seen, gated = [], set(), []
    for name, m in model.named_modules():
        if any(g == "" or name.startswith(g + ".") for g in gated):
            continue
        if isinstance(m, GatedConv2d):
            gated.append(name)
        if isinstance(m, (GatedConv2d, nn.modules.conv._ConvNd)) and id(m) not in seen:
            seen.add(id(m))
            out.append((name, m))
    return out


def _matcher(spec: Filter, which: str, names: list[str]) -> Callable[[str, nn.Module], bool] | None:
    """The filter as a predicate; patterns are checked here: each must name at least one convolution."""
    if spec is None:
        return None
    if callable(spec):
        return spec
    patterns = [spec] if isinstance(spec, str) else spec
    if not isinstance(patterns, Iterable) or isinstance(patterns, (bytes, dict)):
        raise ValueError(f"{which} must be an fnmatch pattern, a list of them or a predicate (name, module) -> bool, "
                         f"got {spec!r}")
    patterns = list(patterns)
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ValueError(f"{which} patterns must be non-empty strings, got {p!r}")
        if not any(_matches(n, p) for n in names):
            example = f" (names look like {names[-1]!r})" if names else ""
            raise ValueError(f"{which} pattern {p!r} matches no convolution of the model{example}")
    return lambda name, module: any(_matches(name, p) for p in patterns)


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def _why_not(name: str, m: nn.Module, keep, drop, min_kernel_size: int) -> str | None:
    """Why ``m`` is left alone, or None to convert it."""
    if isinstance(m, GatedConv2d):
        return "already a gated block"
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return "a transposed convolution"
    if not isinstance(m, nn.Conv2d):
        return "not a 2-D convolution"
    if type(m) is not nn.Conv2d:
        return "a subclass of nn.Conv2d: its forward may differ from nn.Conv2d's"
    if keep is not None and not keep(name, m):
        return "not chosen by include"
    if drop is not None and drop(name, m):
        return "chosen by exclude"
    if max(m.kernel_size) < min_kernel_size:
        return f"kernel {m.kernel_size[0]}x{m.kernel_size[1]} smaller than min_kernel_size={min_kernel_size}"
    if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
        return "it has hooks, which the gated block would not run"
    return None


def _gated_like(conv: nn.Conv2d, block_kwargs: dict, paths_filled_later: bool) -> GatedConv2d:
    """A new gated block with ``conv``'s geometry, device, dtype, mode and trainability. ``paths_filled_later``:
    the path kernels are left uninitialised (the caller writes every one; initialising K copies of a large model's
    kernels only to overwrite them took most of the conversion's time), the gate is initialised as a new one."""
    args = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups, conv.bias is not None, conv.padding_mode)
    if paths_filled_later:
        with torch.device("meta"):
            block = GatedConv2d(*args, dtype=conv.weight.dtype, **block_kwargs)
        block.to_empty(device=conv.weight.device)
        for m in block.gate.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
    else:
        block = GatedConv2d(*args, device=conv.weight.device, dtype=conv.weight.dtype, **block_kwargs)
    block.paths.requires_grad_(conv.weight.requires_grad)
    return block.train(conv.training)


@torch.no_grad()
def _uniform_gate(gate: Gate) -> float:
    """Make the gate give every path the same weight c for every input; returns c."""
    k = gate.num_paths
    if gate.gate == "constant" or gate.is_one:
        return 1.0 / k  # by definition (and its weights are frozen)
    gate.fc.weight.zero_()  # the last layer ignores its input: z = bias
    if gate.gate == "softmax":
        gate.fc.bias.zero_()  # equal logits: 1/K each
        return 1.0 / k
    if gate.gate == "relu":
        gate.fc.bias.fill_(1.0 / k)  # ReLU(1/K) = 1/K, in the linear part (gradients flow)
        return 1.0 / k
    if k == 1:  # sigmoid(z) < 1: a one-path sigmoid gate starts at 1/2 (z = 0) and the kernel is doubled
        gate.fc.bias.zero_()
        return 0.5
    gate.fc.bias.fill_(-math.log(k - 1))  # sigmoid(-log(K - 1)) = 1 / (1 + (K - 1)) = 1/K
    return 1.0 / k


@torch.no_grad()
def _upcycle(block: GatedConv2d, conv: nn.Conv2d, noise: float) -> None:
    """Copies of ``conv``'s kernel and bias in every path, such that the block computes ``conv`` now: under a softmax
    gate (its weights sum to one for every input) exact copies and the gate as initialised; under another gate, a
    uniform start, copies scaled to match it and zero-sum perturbations that let the copies move apart."""
    k = block.num_paths
    scale, eps = 1.0, None
    if block.gate.gate != "softmax":
        scale = 1.0 / (k * _uniform_gate(block.gate))
    w = conv.weight * scale
    if block.gate.gate != "softmax" and k > 1 and noise > 0:
        rms = w.pow(2).mean().sqrt()
        if rms == 0:  # a zero-initialised kernel: perturb at the scale of a fresh one
            rms = w.new_tensor(1.0 / math.sqrt(w[0].numel()))
        # drawn in float32 (4x faster than float64 on a CPU), made to sum to zero in the kernel's own dtype
        eps = torch.randn((k, *w.shape), device=w.device).to(w.dtype)
        eps = (eps - eps.mean(0, keepdim=True)).mul_(noise * rms)
    for p, path in enumerate(block.paths):
        path.weight.copy_(w if eps is None else w + eps[p])
        if conv.bias is not None:
            path.bias.copy_(conv.bias * scale)


def _places(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(module) -> every (parent, attribute name) holding it."""
    places: dict[int, list[tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for attr, child in parent._modules.items():
            if child is not None:
                places.setdefault(id(child), []).append((parent, attr))
    return places
