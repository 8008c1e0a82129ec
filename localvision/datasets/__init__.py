"""Datasets, transforms and generated demo data of localvision (imports register them)."""
from .cls_datasets import BaseClsDataset, CIFAR10Dataset, CIFAR100Dataset, ImageFolderDataset
from .synthetic import SHAPE_CLASSES, make_shapes_classification
from .transforms import PackClsInputs, RandomCrop, RandomResizedCrop

__all__ = ['BaseClsDataset', 'ImageFolderDataset', 'CIFAR10Dataset', 'CIFAR100Dataset', 'SHAPE_CLASSES',
           'make_shapes_classification', 'PackClsInputs', 'RandomCrop', 'RandomResizedCrop']
