"""CIFAR ResNets (He et al. 2016, sec. 4.2) as used by the InfoPro and DGL papers, in timm style.

A 3x3 stem (16 channels, stride 1) and three stages of ``(depth - 2) / 6`` basic blocks with
16, 32 and 64 channels and strides 1, 2, 2, then global average pooling and a linear
classifier. Shortcuts are identity, or 1x1 conv + BN where the stride or the width changes
(option B, as in InfoPro's code). ResNet-32 has 0.46M parameters, ResNet-110 1.7M.

``import localvision.models.backbones`` registers ``cifar_resnet{20,32,44,56,110}`` with timm,
so ``timm.create_model('cifar_resnet110', num_classes=10)`` works. There are no pretrained
weights: ``pretrained=True`` raises.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

__all__ = ['BasicBlock', 'CifarResNet']

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, act_layer: Type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = act_layer(inplace=True)
        self.conv2 = conv3x3(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = act_layer(inplace=True)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with ``(depth - 2) / 6`` basic blocks per stage.

    Args:
        depth: 6n + 2 (20, 32, 44, 56, 110, ...).
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        in_chans: input channels.
        widths: channels of the three stages (the stem has ``widths[0]``).
        drop_rate: dropout before the classifier.
        global_pool: timm pooling type (``'avg'``, ``'max'``, ``''`` for none...).
    """

    def __init__(self, depth: int = 32, num_classes: int = 10, in_chans: int = 3,
                 widths: Sequence[int] = (16, 32, 64), drop_rate: float = 0., global_pool: str = 'avg',
                 block: Type[nn.Module] = BasicBlock) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f'CifarResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110...), got {depth}')
        if len(widths) != 3:
            raise ValueError(f'CifarResNet needs three stage widths, got {tuple(widths)}')
        num_blocks = (depth - 2) // 6
        self.depth = depth
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module='act1')]

        in_chs, reduction = widths[0], 1
        for i, (out_chs, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks = [block(in_chs if j == 0 else out_chs, out_chs, stride if j == 0 else 1) for j in range(num_blocks)]
            self.add_module(f'layer{i}', nn.Sequential(*blocks))
            in_chs, reduction = out_chs, reduction * stride
            self.feature_info.append(dict(num_chs=out_chs, reduction=reduction, module=f'layer{i}'))

        self.num_features = self.head_hidden_size = in_chs
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity='linear')
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups (stem, blocks) for timm's layer-wise learning-rate decay."""
        return dict(stem=r'^conv1|bn1', blocks=r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = 'avg') -> None:
        """Replace the classifier (``num_classes=0``: none)."""
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the three stages: ``(B, C, 32, 32)`` -> ``(B, 64, 8, 8)``."""
        x = self.act1(self.bn1(self.conv1(x)))
        for layer in (self.layer1, self.layer2, self.layer3):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                from timm.models import checkpoint_seq
                x = checkpoint_seq(layer, x)
            else:
                x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify (``pre_logits=True``: stop before the classifier)."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_cifar_resnet(variant: str, depth: int, pretrained: bool = False, **kwargs) -> CifarResNet:
    if pretrained:
        raise RuntimeError(f'{variant}: no pretrained weights exist for the CIFAR ResNets; '
                           'create it with pretrained=False (weights are trained from scratch)')
    # four feature levels (act1, layer1..3) instead of timm's default five
    return build_model_with_cfg(CifarResNet, variant, pretrained=False, depth=depth,
                                feature_cfg=dict(out_indices=(0, 1, 2, 3)), **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    return dict(url='', num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0,
                interpolation='bilinear', mean=CIFAR_MEAN, std=CIFAR_STD, first_conv='conv1', classifier='fc',
                license='apache-2.0', **kwargs)


DEPTHS = (20, 32, 44, 56, 110)
default_cfgs = generate_default_cfgs({f'cifar_resnet{d}': _cfg() for d in DEPTHS})


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-20 (0.27M parameters)."""
    return _create_cifar_resnet('cifar_resnet20', 20, pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-32 (0.46M parameters)."""
    return _create_cifar_resnet('cifar_resnet32', 32, pretrained, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-44 (0.66M parameters)."""
    return _create_cifar_resnet('cifar_resnet44', 44, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-56 (0.85M parameters)."""
    return _create_cifar_resnet('cifar_resnet56', 56, pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-110 (1.73M parameters)."""
    return _create_cifar_resnet('cifar_resnet110', 110, pretrained, **kwargs)
