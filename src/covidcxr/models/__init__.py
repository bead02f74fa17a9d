"""Model registry: the paper's CNN, frozen ImageNet backbones, and tiny test networks.

    >>> from covidcxr.models import create_model, list_models, get_model_spec
    >>> list_models()
    ['seed-cnn', 'vgg16', 'densenet121', 'resnet50', 'efficientnet-lite0']
    >>> network = create_model("seed-cnn", num_classes=3)
    >>> network.spec.input_size
    100

Every network maps (B, 3, S, S) images (normalised with ``spec.mean`` / ``spec.std`` from
[0, 1]) to (B, num_classes) logits, and exposes ``forward_features`` (pooled, flattened trunk
output, cacheable when ``spec.frozen_trunk``), ``forward_head``, ``spec``, ``l2_strength`` and
``l2_parameters()``.
"""

from covidcxr.models.base import ClassifierNetwork
from covidcxr.models.registry import ModelSpec, create_model, get_model_spec, list_models
from covidcxr.models.weights import WeightsUnavailableError

__all__ = [
    "ClassifierNetwork",
    "ModelSpec",
    "WeightsUnavailableError",
    "create_model",
    "get_model_spec",
    "list_models",
]
