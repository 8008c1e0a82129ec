"""Object detection with local learning, as mmdet components (registered in mmdet's registries:
mmdet configs keep ``_scope_='mmdet'``; local objectives go to localvision's ``OBJECTIVES``).

Configs pull this in with ``custom_imports=dict(imports=['localvision.det'])``;
``import localvision`` alone never imports mmdet.
"""
from .datasets import CheckedCocoDataset, ShapesDetDataset, ShapesInstDataset, check_coco_annotations
from .losses import LowMemFocalLoss
from .local_detector import LocalDetectorMixin, LocalSingleStageDetector, LocalTwoStageDetector
from .objectives import DenseDetAuxHead, DetGreedy, InfoProDet
from .simple_pyramid import SimplePyramid

__all__ = ['LocalDetectorMixin', 'LocalSingleStageDetector', 'LocalTwoStageDetector', 'InfoProDet',
           'DetGreedy', 'DenseDetAuxHead', 'SimplePyramid', 'CheckedCocoDataset',
           'ShapesDetDataset', 'ShapesInstDataset', 'check_coco_annotations', 'LowMemFocalLoss']
