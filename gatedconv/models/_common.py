"""Pieces shared by the baseline families (``cnn``, ``resnet``, ``vit``).

Every registered baseline builder maps a ``(B, 3, 32, 32)`` float batch to ``(B, num_classes)`` logits, takes
``num_classes=10`` as a keyword and returns a module with ``num_params()`` (from ``ParamCountMixin``).
"""
from __future__ import annotations

__all__ = ["ParamCountMixin", "check_common"]


class ParamCountMixin:
    """Adds ``num_params()`` to an ``nn.Module``, as on ``GatedNet``."""

    def num_params(self, trainable_only: bool = True) -> int:
        params = self.parameters()  # type: ignore[attr-defined]
        return sum(p.numel() for p in params if p.requires_grad or not trainable_only)


def check_common(num_classes: int, in_channels: int, image_size: int) -> None:
    if num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ValueError(
            f"num_classes, in_channels and image_size must be >= 1, got {num_classes}, {in_channels}, {image_size}"
        )
