"""A small model registry in the style of timm / torchvision: ``register_model``, ``create_model``, ``list_models``."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

__all__ = ["create_model", "is_model", "list_models", "model_entrypoint", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its function name. ``fn(**kwargs)`` must return an ``nn.Module``."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style ``pattern``."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    return name in _MODELS


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name``; keyword arguments override the variant's defaults.

    ``convert={...}`` (any model): then put gated blocks in its convolutions with ``gatedconv.convert(model,
    **convert)``; being part of the keywords, the conversion is saved with a run and rebuilt by ``load_model``."""
    conversion = kwargs.pop("convert", None)
    model = model_entrypoint(name)(**kwargs)
    if conversion is not None:
        from ..convert import convert  # here: convert imports the layers, which the registry does not need

        if not isinstance(conversion, dict):
            raise ValueError(f"convert must be a dict of gatedconv.convert keywords, got {conversion!r}")
        model, _ = convert(model, inplace=True, **conversion)
    return model
