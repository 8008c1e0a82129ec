"""The generated demo sets of localvision (classification, segmentation, detection).

The classification set is an ImageFolder layout that mmpretrain's ``CustomDataset`` reads; the
segmentation and detection sets are read by ``localvision.seg`` / ``localvision.det`` datasets.
"""
from .synthetic import SHAPE_CLASSES, make_shapes_classification

__all__ = ['SHAPE_CLASSES', 'make_shapes_classification']
