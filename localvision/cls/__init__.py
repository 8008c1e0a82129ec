"""Image classification with local learning, as mmpretrain components (registered in
mmpretrain's registries: mmpretrain configs keep ``default_scope='mmpretrain'``).

Configs pull this in with ``custom_imports=dict(imports=['localvision.cls'])``; mmpretrain's
datasets (``ImageNet``, ``CIFAR10``, ``CustomDataset``), transforms, batch augments
(Mixup / CutMix), heads, losses and ``Accuracy`` do the rest. ``import localvision`` alone never
imports mmpretrain.
"""
from .local_image_classifier import LocalImageClassifier

__all__ = ['LocalImageClassifier']
