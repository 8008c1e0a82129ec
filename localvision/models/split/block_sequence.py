"""A timm model seen as an ordered list of blocks with a uniform forward.

Every supported family is read as ``stem, block_1 ... block_n, final norm``: block 0 is the
stem, blocks 1..n are the residual / transformer blocks in execution order, and the final norm
(``norm`` of a ViT, ``norm_pre`` of a ConvNeXt, nothing for a ResNet) closes the last module.
Each block is addressed both by its flat index and by ``(stage, index in stage)``, where stage 0
is the stem, so the split tables of the papers, written as (stage, block) pairs, can be used
as they are.

The timm model stays the only owner of its parameters: blocks are plain callables that call
its submodules, so ``state_dict`` keys are exactly timm's and an exported checkpoint loads in
stock timm.
"""
from __future__ import annotations

from localvision.errors import InputError

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

Tensor = torch.Tensor


@dataclass
class BlockInfo:
    """Where a block sits and what it produces (channels / stride are filled by a dry run)."""

    index: int
    stage: int
    index_in_stage: int
    name: str
    modules: List[nn.Module] = field(default_factory=list, repr=False)
    params: List[nn.Parameter] = field(default_factory=list, repr=False)
    num_chs: int = 0
    reduction: int = 0

    def parameters(self) -> List[nn.Parameter]:
        """The parameters this block owns (modules' and direct ones)."""
        out = list(self.params)
        for m in self.modules:
            out.extend(m.parameters())
        return out


@dataclass
class BlockSequence:
    """Ordered blocks of a timm model with a uniform ``x -> x`` forward."""

    family: str
    model: nn.Module
    blocks: List[Callable[[Tensor], Tensor]]
    infos: List[BlockInfo]
    final_norm: nn.Module
    to_map: Callable[[Tensor, Tuple[int, int]], Tensor]

    def __len__(self) -> int:
        return len(self.blocks)

    def __deepcopy__(self, memo: dict) -> 'BlockSequence':
        """Blocks are closures over the model's submodules: re-read them from the copied model."""
        import copy
        fresh = to_block_sequence(copy.deepcopy(self.model, memo))
        for new, old in zip(fresh.infos, self.infos):
            new.num_chs, new.reduction = old.num_chs, old.reduction
        return fresh

    def index_of(self, cut) -> int:
        """Flat block index of ``cut`` given as an int or a ``(stage, index_in_stage)`` pair."""
        if isinstance(cut, int):
            return cut
        if isinstance(cut, (tuple, list)) and len(cut) == 2:
            for info in self.infos:
                if (info.stage, info.index_in_stage) == (int(cut[0]), int(cut[1])):
                    return info.index
            stages = {}
            for info in self.infos:
                stages[info.stage] = max(stages.get(info.stage, -1), info.index_in_stage)
            allowed = ', '.join(f'stage {s}: 0..{n}' for s, n in sorted(stages.items()))
            raise InputError(f'cut {tuple(cut)} names no block of {self.family} model '
                             f'{type(self.model).__name__}; allowed (stage, block) pairs: {allowed}')
        raise InputError(f'a cut must be a block index or a (stage, block) pair, got {cut!r}')


def _resnet_like(model: nn.Module) -> BlockSequence:
    stem_mods = [getattr(model, n) for n in ('conv1', 'bn1', 'act1', 'maxpool') if hasattr(model, n)]

    def stem(x: Tensor) -> Tensor:
        for m in stem_mods:
            x = m(x)
        return x

    blocks: List[Callable] = [stem]
    infos = [BlockInfo(0, 0, 0, 'stem', modules=stem_mods)]
    stage = 1
    while hasattr(model, f'layer{stage}'):
        for j, blk in enumerate(getattr(model, f'layer{stage}')):
            infos.append(BlockInfo(len(blocks), stage, j, f'layer{stage}.{j}', modules=[blk]))
            blocks.append(blk)
        stage += 1
    return BlockSequence('resnet', model, blocks, infos, nn.Identity(), _identity_map)


def _convnext(model: nn.Module) -> BlockSequence:
    blocks: List[Callable] = [model.stem]
    infos = [BlockInfo(0, 0, 0, 'stem', modules=[model.stem])]
    for s, st in enumerate(model.stages):
        for j, blk in enumerate(st.blocks):
            if j == 0:
                # The stage's downsample (identity in stage 0) runs with its first block.
                def first(x: Tensor, _ds=st.downsample, _blk=blk) -> Tensor:
                    return _blk(_ds(x))
                blocks.append(first)
                mods = [st.downsample, blk]
            else:
                blocks.append(blk)
                mods = [blk]
            infos.append(BlockInfo(len(infos), s + 1, j, f'stages.{s}.blocks.{j}', modules=mods))
    return BlockSequence('convnext', model, blocks, infos, model.norm_pre, _identity_map)


def _vit(model: nn.Module) -> BlockSequence:
    def stem(x: Tensor) -> Tensor:
        x = model.patch_embed(x)
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        return model.norm_pre(x)

    direct = [p for p in (model.cls_token, getattr(model, 'reg_token', None), model.pos_embed)
              if isinstance(p, nn.Parameter)]
    blocks: List[Callable] = [stem]
    infos = [BlockInfo(0, 0, 0, 'stem', modules=[model.patch_embed, model.norm_pre], params=direct)]
    for j, blk in enumerate(model.blocks):
        infos.append(BlockInfo(len(blocks), 1, j, f'blocks.{j}', modules=[blk]))
        blocks.append(blk)

    def to_map(x: Tensor, img_hw: Tuple[int, int]) -> Tensor:
        """Tokens (B, N, C) -> NCHW map on the patch grid (prefix tokens dropped)."""
        if x.dim() == 4:
            return x
        if model.dynamic_img_size:
            gh, gw = model.patch_embed.dynamic_feat_size(img_hw)
        else:
            gh, gw = model.patch_embed.grid_size
        x = x[:, model.num_prefix_tokens:]
        return x.reshape(x.shape[0], gh, gw, x.shape[-1]).permute(0, 3, 1, 2).contiguous()

    return BlockSequence('vit', model, blocks, infos, model.norm, to_map)


def _identity_map(x: Tensor, img_hw: Tuple[int, int]) -> Tensor:
    return x


def _family_readers() -> List[Tuple[str, Callable[[nn.Module], bool], Callable[[nn.Module], BlockSequence]]]:
    from timm.models.convnext import ConvNeXt
    from timm.models.resnet import ResNet
    from timm.models.vision_transformer import VisionTransformer

    from ..backbones.cifar_resnet import CifarResNet
    return [
        ('resnet', lambda m: isinstance(m, (ResNet, CifarResNet)), _resnet_like),
        ('convnext', lambda m: isinstance(m, ConvNeXt), _convnext),
        ('vit', lambda m: isinstance(m, VisionTransformer), _vit),
    ]


SUPPORTED_FAMILIES = ('timm ResNet/ResNet-D (resnet18/50/101, resnet50d, ...)', 'CIFAR ResNet (cifar_resnet32/56/110)',
                      'ConvNeXt', 'VisionTransformer/DeiT (vit_*, deit_*)')


def to_block_sequence(model: nn.Module) -> BlockSequence:
    """Read a timm model as a :class:`BlockSequence`, or raise naming the supported families."""
    for _, accepts, reader in _family_readers():
        if accepts(model):
            return reader(model)
    raise InputError(f'unsupported backbone family {type(model).__name__}; supported: '
                     + ', '.join(SUPPORTED_FAMILIES))


def run_blocks(seq: BlockSequence, x: Tensor, start: int, end: int, apply_final_norm: bool = False) -> Tensor:
    """Run blocks ``start..end`` (inclusive); the final norm after the last block if asked."""
    for i in range(start, end + 1):
        x = seq.blocks[i](x)
    if apply_final_norm:
        x = seq.final_norm(x)
    return x


def block_shapes(seq: BlockSequence, input_shape: Sequence[int], batch_size: int = 1,
                 device: Optional[torch.device] = None) -> List[torch.Size]:
    """Output shape of every block (as NCHW maps) from one no-grad pass; fills ``num_chs``/``reduction``."""
    shapes = []
    was_training = seq.model.training
    seq.model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(batch_size, *input_shape, device=device)
            img_hw = tuple(input_shape[-2:])
            for blk, info in zip(seq.blocks, seq.infos):
                x = blk(x)
                fmap = seq.to_map(x, img_hw)
                shapes.append(fmap.shape)
                info.num_chs = fmap.shape[1]
                info.reduction = max(1, round(img_hw[0] / fmap.shape[2]))
    finally:
        seq.model.train(was_training)
    return shapes
