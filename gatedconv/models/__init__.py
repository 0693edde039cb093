"""Model registry and model families, one file per family. Importing this package registers every model.

* ``gated``    - the five-block gated network of the original study (``gatedconv``, ``gatedconv_small``, ...)
* ``airbench`` - airbench94's layout with gated convolutions (``gatedconv_fast``)
* ``cnn``      - the MLP, small ConvNets and the ``cnn_base`` family
* ``resnet``   - CIFAR ResNet-18 / ResNet-20
* ``vit``      - a small ViT from scratch and the pretrained ``previt``
* ``tv``       - torchvision architectures adapted to 32x32 inputs (``tv_resnet18``), to gate with ``convert=``
"""
from . import airbench, cnn, resnet, tv, vit  # noqa: F401  (importing a family registers its models)
from ._registry import create_model, is_model, list_models, model_entrypoint, register_model
from .gated import GatedNet, GatedNetConfig

__all__ = [
    "GatedNet", "GatedNetConfig", "create_model", "is_model", "list_models", "model_entrypoint", "register_model",
]
