"""Model registry and model families. Importing this package registers every model."""
from ._registry import create_model, is_model, list_models, model_entrypoint, register_model
from .gated import GatedNet, GatedNetConfig
from . import baselines  # registers the baseline families
from . import fast  # registers gatedconv_fast (airbench94 layout, gated convolutions)

__all__ = ["create_model", "is_model", "list_models", "model_entrypoint", "register_model", "GatedNet", "GatedNetConfig"]
