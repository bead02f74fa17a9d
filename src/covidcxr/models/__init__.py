"""Model registry: the paper's CNN, frozen ImageNet backbones, a lung-segmentation U-Net, and
tiny test networks.

    >>> from covidcxr.models import create_model, list_models, get_model_spec
    >>> list_models()
    ['seed-cnn', 'vgg16', 'densenet121', 'resnet50', 'efficientnet-lite0', 'unet']
    >>> list_models(task="segmentation")
    ['unet']
    >>> network = create_model("seed-cnn", num_classes=3)
    >>> network.spec.input_size
    100

Every classifier (``spec.task == "classification"``) maps (B, 3, S, S) images (normalised with
``spec.mean`` / ``spec.std`` from [0, 1]) to (B, num_classes) logits, and exposes
``forward_features`` (pooled, flattened trunk output, cacheable when ``spec.frozen_trunk``),
``forward_head``, ``spec``, ``l2_strength`` and ``l2_parameters()``.

Every segmentation network (``spec.task == "segmentation"``) maps (B, 1, H, W) grey images in
[0, 1] to (B, 1, H, W) mask logits, and exposes ``spec``, ``num_classes`` (1), ``l2_strength``
(0) and ``l2_parameters()`` ([]).
"""

from covidcxr.models.base import ClassifierNetwork
from covidcxr.models.registry import TASKS, ModelSpec, create_model, get_model_spec, list_models
from covidcxr.models.unet import SegmentationNetwork
from covidcxr.models.weights import WeightsUnavailableError

__all__ = [
    "TASKS",
    "ClassifierNetwork",
    "ModelSpec",
    "SegmentationNetwork",
    "WeightsUnavailableError",
    "create_model",
    "get_model_spec",
    "list_models",
]
