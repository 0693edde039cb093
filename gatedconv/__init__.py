"""gatedconv: input-gated convolutions on CIFAR-10.

Importing the package does no work beyond defining classes and registering models.
"""
from .checkpoint import load_model
from .convert import ConversionReport, convert
from .data import get_loaders, load_cifar10
from .deploy import reparameterize
from .dynamic import DynamicConv2d
from .layers import Gate, GatedConv2d, Nth_Block
from .models import GatedNet, GatedNetConfig, create_model, list_models, register_model
from .plot import Accumulator, Animator, Timer
from .train import History, evaluate, trainf

__version__ = "0.1.0"

__all__ = [
    "Gate", "GatedConv2d", "Nth_Block", "GatedNet", "GatedNetConfig", "create_model", "list_models",
    "register_model", "load_model", "trainf", "evaluate", "History", "Timer", "Accumulator", "Animator",
    "get_loaders", "load_cifar10", "reparameterize", "DynamicConv2d", "convert", "ConversionReport",
]
