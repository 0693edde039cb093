"""Batched, seeded augmentation on uint8 (or float) image tensors (B, C, H, W): the one place both recipes
draw their random crops, translations and flips from.

* ``epoch_generator(seed, epoch)`` - the generator of one epoch's order and augmentation. Every training
  iterator (``gatedconv.data.TensorBatches`` and the fast recipe's loop) seeds from it, so an epoch can be
  recreated from ``(seed, epoch)`` alone, which is what makes resuming mid-epoch exact.
* ``random_crop`` / ``random_flip`` / ``augment_batch`` - the original recipe's zero-padded crop and random flip.
* ``reflect_pad`` / ``batch_crop`` / ``batch_translate`` / ``alternating_flip`` - airbench94's reflect-padded
  translation and alternating flip (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU",
  arXiv:2404.00498).
* ``tta_views`` - the test-time augmentation views (mirror, one-pixel translations) and their weights.

Why batched: on a 2-core CPU the per-image Python and PIL work of a classic ``DataLoader`` costs as much as
the network itself; a few tensor ops per batch cost almost nothing.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    "epoch_generator", "random_crop", "random_flip", "augment_batch", "reflect_pad", "batch_crop",
    "batch_translate", "alternating_flip_mask", "alternating_flip", "tta_views", "FLIP_SEED_OFFSET",
]

# the alternating-flip pattern of seed s is drawn from manual_seed(FLIP_SEED_OFFSET + s), a stream apart from the
# per-epoch generators (epoch_generator: manual_seed(s * 1_000_003 + epoch)); any constant far from those works
FLIP_SEED_OFFSET = 1 << 40


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of epoch ``epoch`` of a run seeded ``seed``: its shuffling order and augmentation.
    Seeded from ``(seed, epoch)`` alone, so a resumed run recreates any epoch without replaying earlier ones."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def random_crop(x: torch.Tensor, pad: int, generator: Optional[torch.Generator] = None,
                shifts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels, filling with zeros: pad the batch once, then gather each
    image's window. Equal to ``RandomCrop(32, padding=pad)`` applied per image. ``shifts`` (B, 2) in
    [0, 2*pad] may be given instead of drawing them."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    if shifts is None:
        shifts = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    shifts = shifts.to(x.device)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = shifts[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = shifts[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def random_flip(x: torch.Tensor, generator: Optional[torch.Generator] = None,
                flips: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2 (or where the boolean ``flips`` (B,) is True)."""
    if flips is None:
        flips = torch.rand(x.shape[0], generator=generator) < 0.5
    flips = flips.to(x.device)
    return torch.where(flips[:, None, None, None], x.flip(3), x)


def augment_batch(x: torch.Tensor, pad: int = 4, flip: bool = True,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random crop with zero padding, then random horizontal flip, on a whole batch (B, C, H, W)."""
    x = random_crop(x, pad, generator)
    return random_flip(x, generator) if flip else x


def _reflect_pad_by_index(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect padding as two index selects (any dtype, any device): index ``i`` in [-pad, n + pad) reads
    ``|i|`` below the image and ``2 (n - 1) - i`` above it (the edge pixel is not repeated, as in ``F.pad``)."""
    def index(n: int) -> torch.Tensor:
        i = torch.arange(-pad, n + pad, device=images.device).abs()
        return torch.where(i > n - 1, 2 * (n - 1) - i, i)
    return images.index_select(2, index(images.shape[-2])).index_select(3, index(images.shape[-1]))


def reflect_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad (N, C, H, W) by ``pad`` on every side (``F.pad(mode="reflect")``), for any dtype, uint8 too.

    ``F.pad`` is ~12x faster than index selects on the CPU for the uint8 training set (0.13 s vs 1.6 s for
    50,000 images, one thread, measured here), but its reflect kernel is not implemented for every integer dtype
    on every device; there the same result comes from two index selects."""
    if pad <= 0:
        return images
    h, w = images.shape[-2:]
    if pad >= min(h, w):
        raise ValueError(f"reflect padding {pad} needs images larger than {pad} pixels, got {h}x{w}")
    try:
        return F.pad(images, (pad, pad, pad, pad), mode="reflect")
    except (RuntimeError, NotImplementedError):
        return _reflect_pad_by_index(images, pad)


def batch_crop(padded: torch.Tensor, pad: int, shifts: torch.Tensor) -> torch.Tensor:
    """Windows of (N, C, H + 2 pad, W + 2 pad) images: image i is moved by ``shifts[i] = (dy, dx)`` in
    [-pad, pad] (window origin ``pad + dy, pad + dx``). One masked copy per shift value and axis (2 * (2 pad + 1)
    copies of the batch in all), like airbench's ``batch_crop``, instead of a per-pixel gather."""
    if pad <= 0:
        return padded
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    shifts = shifts.to(padded.device)
    rows = padded.new_empty(n, c, h, wp)
    for s in range(-pad, pad + 1):
        m = shifts[:, 0] == s
        rows[m] = padded[m, :, pad + s:pad + s + h, :]
    out = padded.new_empty(n, c, h, w)
    for s in range(-pad, pad + 1):
        m = shifts[:, 1] == s
        out[m] = rows[m, :, :, pad + s:pad + s + w]
    return out


def batch_translate(images: torch.Tensor, pad: int, generator: Optional[torch.Generator] = None,
                    shifts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Random translation of each image by up to ``pad`` px per axis, reflect-filled (airbench94's
    ``translate=2``); shifts (N, 2) in [-pad, pad] are drawn from ``generator`` unless given."""
    if pad <= 0:
        return images
    if shifts is None:
        shifts = torch.randint(-pad, pad + 1, (images.shape[0], 2), generator=generator)
    return batch_crop(reflect_pad(images, pad), pad, shifts)


def _flip_base_generator(seed_or_generator: Union[int, torch.Generator]) -> torch.Generator:
    if isinstance(seed_or_generator, torch.Generator):
        g = torch.Generator()
        g.set_state(seed_or_generator.get_state())  # a copy: the caller's generator is not advanced
        return g
    return torch.Generator().manual_seed(int(seed_or_generator))


def alternating_flip_mask(n: int, epoch: int, seed_or_generator: Union[int, torch.Generator]) -> torch.Tensor:
    """Which of n images to flip left-right in ``epoch`` (0-based): a random half in epoch 0, then each image's
    opposite orientation on odd epochs and its epoch-0 orientation on even ones (airbench94's "alternating flip":
    every image is seen both ways within any two consecutive epochs, where random flips leave 1/4 of the images
    unflipped or always flipped over two epochs). The epoch-0 draw comes from ``seed_or_generator`` (an int, or a
    generator whose state is copied, not advanced), so every epoch recreates the same base pattern."""
    base = torch.rand(n, generator=_flip_base_generator(seed_or_generator)) < 0.5
    return base ^ bool(epoch % 2)


def alternating_flip(images: torch.Tensor, epoch: int, seed_or_generator: Union[int, torch.Generator]) -> torch.Tensor:
    """``images`` (N, C, H, W) with the images of ``alternating_flip_mask`` flipped left-right."""
    m = alternating_flip_mask(images.shape[0], epoch, seed_or_generator).to(images.device)
    return torch.where(m[:, None, None, None], images.flip(3), images)


def tta_views(images: torch.Tensor, level: int = 2) -> List[Tuple[float, torch.Tensor]]:
    """The (weight, view) pairs whose weighted logits make the TTA prediction (weights sum to 1), airbench94's
    levels: 0 the images; 1 the images and their mirror, 1/2 each; 2 adds the images translated by one pixel
    up-left and down-right (reflect-filled), each with its mirror: 1/4 for the two untranslated views and 1/8 for
    each of the four translated ones."""
    if level not in (0, 1, 2):
        raise ValueError(f"TTA level must be 0, 1 or 2, got {level}")
    if level == 0:
        return [(1.0, images)]
    w = 0.5 if level == 1 else 0.25
    views = [(w, images), (w, images.flip(3))]
    if level == 2:
        p = reflect_pad(images, 1)
        h, wd = images.shape[-2:]
        for t in (p[:, :, 0:h, 0:wd], p[:, :, 2:h + 2, 2:wd + 2]):  # content moved down-right, then up-left
            views += [(0.125, t), (0.125, t.flip(3))]
    return views
