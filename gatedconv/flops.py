"""What a training step costs: its matmul / convolution FLOPs (``training_step_flops``), the hardware's
practical matmul peak (``matmul_peak_flops``) and one training step on a fixed batch for the benchmarks
(``synthetic_train_step``). The fast recipe reports its efficiency as the first over the second.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from .train import autocast_context

__all__ = ["training_step_flops", "inference_flops", "matmul_peak_flops", "synthetic_train_step", "sync"]


def training_step_flops(model: nn.Module, input_shape: Sequence[int], *, autocast_dtype: Optional[torch.dtype] = None,
                        channels_last: bool = True, sample: int = 32) -> int:
    """Matmul / convolution FLOPs of one training step (forward + backward) of ``model`` on a batch of
    ``input_shape`` (B, C, H, W), counted by ``torch.utils.flop_counter.FlopCounterMode`` on a copy of the model
    (its BatchNorm statistics and gradients stay untouched). Counted on ``sample`` images and scaled to B:
    exact, as every counted op (conv, mm, addmm, bmm) is linear in the batch. Elementwise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    b = int(input_shape[0])
    s = max(1, min(sample, b))
    net = copy.deepcopy(model).train()
    p = next(net.parameters())
    x = torch.randn(s, *input_shape[1:], device=p.device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    counter = FlopCounterMode(display=False)
    with counter, autocast_context(p.device, autocast_dtype):
        net(x).float().sum().backward()
    return int(counter.get_total_flops() * b // s)


@torch.no_grad()
def inference_flops(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)) -> int:
    """Matmul / convolution FLOPs of one eval-mode forward pass of ``model`` on a batch of ``input_shape``, as the
    model computes it at that batch size (a dynamic convolution counts its kernel mixing and its convolution; a
    form chosen for large batches may count more). Elementwise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(model.parameters())
    training = model.training
    model.eval()  # a training-mode forward would also move the BatchNorms' running statistics
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.randn(*input_shape, device=p.device, dtype=p.dtype))
    finally:
        model.train(training)
    return int(counter.get_total_flops())


def synthetic_train_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                         label_smoothing: float = 0.0,
                         autocast_dtype: Optional[torch.dtype] = torch.bfloat16) -> Callable[[], None]:
    """A function doing one training step of ``net`` on the fixed batch ``(x, y)``, as the benchmark scripts
    (``benchmarks/bench_fast.py``, ``benchmarks/bench_malloc.py``) time it: autocast forward, summed cross-entropy in
    fp32, backward, Nesterov SGD step (momentum 0.85, airbench94's). The learning rate is small (1e-3) because
    only the cost matters: the weights should stay near where they start over the timed steps."""
    opt = torch.optim.SGD([q for q in net.parameters() if q.requires_grad], lr=1e-3, momentum=0.85, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing, reduction="sum")

    def step() -> None:
        with autocast_context(x.device, autocast_dtype):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(dtype: torch.dtype = torch.bfloat16, n: int = 2048, device: Union[str, torch.device] = "cpu",
                      repeats: int = 5) -> float:
    """Measured FLOP/s of an n x n @ n x n matmul in ``dtype`` (2 n^3 FLOPs; the best of ``repeats`` timed
    calls after one warm-up): the practical peak the training FLOP/s is compared with. The best, not the mean,
    because on a shared machine the slow calls measure the neighbours; 5 calls of 2048^3 take ~0.3 s here."""
    device = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    a @ b  # warm-up: library initialisation, caches
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best
