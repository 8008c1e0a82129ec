"""Backbones of localvision; importing this registers them with timm (``cifar_resnet*``)."""
from .cifar_resnet import BasicBlock, CifarResNet

__all__ = ['BasicBlock', 'CifarResNet']
