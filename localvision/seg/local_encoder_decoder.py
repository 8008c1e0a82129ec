"""Semantic segmentation (mmseg) with a timm backbone split into K gradient-isolated modules."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.utils import add_prefix

from localvision.errors import InputError
from localvision.models.context import build_context
from localvision.models.local_model import LocalLearningModel, build_executor
from localvision.models.objectives.base import LocalContext, build_objective, per_module_configs, pixel_stats
from localvision.models.split import StagedTimm

Tensor = torch.Tensor

LEVELS_KEY = 'seg.levels'


def _as_list(v) -> List[int]:
    return [int(i) for i in v] if isinstance(v, (list, tuple)) else [int(v)]


@MODELS.register_module()
class LocalEncoderDecoder(EncoderDecoder):
    """mmseg's EncoderDecoder whose timm backbone is trained module by module.

    The backbone is a :class:`~localvision.models.split.StagedTimm` (any timm ResNet / ConvNeXt /
    ViT; e.g. ``resnet50d`` with ``output_stride=8``) cut into K modules. Module k < K-1 is
    trained by its local objective (e.g. ``InfoProSeg``) on its output map; the last module is
    trained by the decode head (and the neck, if any). The backbone's *levels* (what the neck /
    decode head index with ``in_index``) are the outputs of the stages in ``out_indices`` (for a
    ResNet: stage 1..4 = layer1..layer4, i.e. ``out_indices=(1, 2, 3, 4)`` is mmseg's ResNet's
    ``(0, 1, 2, 3)``), or of the blocks in ``out_blocks``. Levels produced by earlier modules
    reach the decode head **detached**, so no gradient crosses a cut. An mmseg
    ``auxiliary_head`` (e.g. the FCN head on layer3) is trained in the unit that produces its
    levels. K=1 is plain EncoderDecoder training of the same network.

    ``loss`` / ``predict`` / ``tensor`` modes are EncoderDecoder's; ``predict`` runs the plain
    backbone path (with the context supply, if any) and the decode head, no auxiliary nets.

    Args:
        backbone: ``dict(model_name=..., pretrained=False, **timm_kwargs)`` (``type`` ignored).
        decode_head / neck / auxiliary_head / train_cfg / test_cfg: as for EncoderDecoder.
        split: see :class:`StagedTimm` (``num_modules``/``cuts``/``strategy``/``input_size``).
        out_indices: stages whose last block output is a level (default: every stage after the stem).
        out_blocks: flat block indices giving the levels instead (e.g. ViT ``(3, 6, 9, 12)``).
        local_objective: one objective config for all local modules, or a list of K-1.
        context: context supply at the cuts (``dict(type='ContSup', variant='R1')``) or ``None``.
        executor: ``PerModuleBackward`` (default) or ``JointBackward``.
    """

    def __init__(self, backbone: dict, decode_head: dict, neck: Optional[dict] = None,
                 auxiliary_head: Union[dict, List[dict], None] = None, train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, split: Optional[dict] = None,
                 out_indices: Optional[Sequence[int]] = None, out_blocks: Optional[Sequence[int]] = None,
                 local_objective: Union[dict, List[dict], None] = None, context: Optional[dict] = None,
                 executor: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None) -> None:
        BaseSegmentor.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if pretrained is not None:
            raise InputError('model.pretrained is not used by LocalEncoderDecoder; give local weights with '
                             "model.backbone.checkpoint_path='/path/to/weights.pth'")
        with DefaultScope.overwrite_default_scope('localvision'):  # localvision's own registries
            self.executor = build_executor(executor)
        backbone = {k: v for k, v in dict(backbone).items() if k not in ('type', 'features_only', 'out_indices')}
        backbone.setdefault('num_classes', 0)
        self.backbone = StagedTimm(split=split, **backbone)
        self.level_blocks = self.backbone.level_blocks(out_indices, out_blocks)
        if neck is not None:
            self.neck = MODELS.build(neck)
        else:  # the heads' in_channels follow the backbone, so swapping it is one line
            decode_head = self._fill_in_channels(decode_head, 'model.decode_head')
            if isinstance(auxiliary_head, (list, tuple)):
                auxiliary_head = [self._fill_in_channels(h, f'model.auxiliary_head[{i}]')
                                  for i, h in enumerate(auxiliary_head)]
            elif auxiliary_head is not None:
                auxiliary_head = self._fill_in_channels(auxiliary_head, 'model.auxiliary_head')
        self._init_decode_head(decode_head)
        self._init_auxiliary_head(auxiliary_head)
        self.train_cfg = ConfigDict(train_cfg or {})
        self.test_cfg = ConfigDict(test_cfg or dict(mode='whole'))
        self.ignore_index = getattr(self.decode_head, 'ignore_index', 255)
        self._check_in_index()

        k = self.backbone.requested_num_modules()
        with DefaultScope.overwrite_default_scope('localvision'):  # objectives and context: localvision's registries
            cfgs = per_module_configs(local_objective, k - 1)
            for c in cfgs:
                c.setdefault('ignore_index', self.ignore_index)
            self.backbone.resolve_split(exit_loss=self._exit_cost_fn(cfgs), tail_loss=self._tail_cost_fn(),
                                        extra_modules=[self.decode_head])
            self.objectives = nn.ModuleList(
                build_objective(c, self.backbone.out_channels(i), self.num_classes, i, k) for i, c in enumerate(cfgs))
            bb = self.backbone
            outs = [bb.out_channels(i) for i in range(bb.num_modules)]
            reductions = [bb.seq.infos[r[-1]].reduction for r in bb.module_ranges()]
            self.context = build_context(context, [bb.input_size[0]] + outs[:-1], outs, reductions,
                                         field_name='model.context')
        self._check_decode_levels()

    # -- levels ----------------------------------------------------------------------------
    def level_channels(self) -> List[int]:
        return [self.backbone.seq.infos[b].num_chs for b in self.level_blocks]

    def _fill_in_channels(self, head: dict, field: str) -> dict:
        """``head.in_channels`` from the backbone levels its ``in_index`` reads."""
        head = dict(head)
        n, chans = self.num_levels, self.level_channels()
        idx = head.get('in_index', -1)
        bad = [i for i in _as_list(idx) if not -n <= i < n]
        if bad:
            raise InputError(f'{field}.in_index={idx} points at level(s) {bad}, but the backbone produces {n} '
                             f'levels (blocks {self.level_blocks}, channels {chans}); allowed: 0..{n - 1} '
                             '(set model.out_indices / model.out_blocks for other levels)')
        head['in_channels'] = [chans[i] for i in idx] if isinstance(idx, (list, tuple)) else chans[idx]
        return head

    @property
    def num_levels(self) -> int:
        return len(self.level_blocks)

    def _head_in_index(self, head: nn.Module) -> List[int]:
        return _as_list(getattr(head, 'in_index', -1))

    def _heads_reading_backbone(self) -> List[Tuple[str, nn.Module]]:
        """Heads whose ``in_index`` points at backbone levels (not at a neck's outputs)."""
        if self.with_neck:
            return []
        heads = [('model.decode_head', self.decode_head)]
        if self.with_auxiliary_head:
            aux = self.auxiliary_head
            if isinstance(aux, nn.ModuleList):
                heads += [(f'model.auxiliary_head[{i}]', h) for i, h in enumerate(aux)]
            else:
                heads.append(('model.auxiliary_head', aux))
        return heads

    def _check_in_index(self) -> None:
        n = self.num_levels
        for field, head in self._heads_reading_backbone():
            idx = self._head_in_index(head)
            bad = [i for i in idx if not -n <= i < n]
            if bad:
                raise InputError(f'{field}.in_index={idx if len(idx) > 1 else idx[0]} points at level(s) {bad}, but '
                                 f'the backbone produces {n} levels (blocks {self.level_blocks}); allowed: '
                                 f'0..{n - 1} (set model.out_indices / model.out_blocks for other levels)')

    def level_units(self) -> List[int]:
        """Which unit produces each level."""
        return [self.backbone.module_of_block(b) for b in self.level_blocks]

    def _check_decode_levels(self) -> None:
        if self.num_units == 1 or self.with_neck:
            return
        units = self.level_units()
        idx = self._head_in_index(self.decode_head)
        if all(units[i] < self.num_units - 1 for i in idx):
            raise InputError(f'model.decode_head.in_index={idx} reads only levels produced before the last of the '
                             f'K={self.num_units} modules, so nothing would train the last module; point it at a '
                             f'level of blocks {list(self.backbone.module_ranges()[-1])}')

    def _levels_read_after(self, k: int) -> set:
        """Levels read by the neck / heads that run in units after k."""
        if self.with_neck:
            return set(range(self.num_levels))
        n = self.num_levels
        read = {i % n for i in self._head_in_index(self.decode_head)}
        if self.with_auxiliary_head:
            heads = self.auxiliary_head if isinstance(self.auxiliary_head, nn.ModuleList) else [self.auxiliary_head]
            for head, u in zip(heads, self.aux_head_units()):
                if u > k:
                    read |= {i % n for i in self._head_in_index(head)}
        return read

    def aux_head_units(self) -> List[int]:
        """The unit that trains each auxiliary head: the one producing the last level it reads."""
        if not self.with_auxiliary_head:
            return []
        heads = self.auxiliary_head if isinstance(self.auxiliary_head, nn.ModuleList) else [self.auxiliary_head]
        if self.with_neck:
            return [self.num_units - 1] * len(heads)
        units = self.level_units()
        return [max(units[i] for i in self._head_in_index(h)) for h in heads]

    # -- split profiling (balanced strategy) ----------------------------------------------
    def _exit_cost_fn(self, cfgs: List[dict]):
        if not cfgs:
            return None
        cache: Dict[int, nn.Module] = {}

        def exit_loss(i: int, fmap: Tensor) -> Tensor:
            c = fmap.shape[1]
            if c not in cache:
                cache[c] = build_objective(cfgs[0], c, self.num_classes, 0, len(cfgs) + 1).to(fmap.device)
            image = torch.zeros(fmap.shape[0], *self.backbone.input_size, device=fmap.device)
            targets = torch.zeros(fmap.shape[0], *image.shape[-2:], dtype=torch.long, device=fmap.device)
            ctx = LocalContext(inputs=image, targets=targets, img_hw=tuple(image.shape[-2:]))
            return sum(v for n, v in cache[c](fmap, ctx).items() if 'loss' in n)
        return exit_loss

    def _tail_cost_fn(self):
        """The decode head's cost on the last block's output, when that is all it reads."""
        last = len(self.backbone.seq) - 1
        idx = [i % self.num_levels for i in self._head_in_index(self.decode_head)]
        if self.with_neck or any(self.level_blocks[i] != last for i in idx):
            return None

        def tail_loss(x: Tensor) -> Tensor:
            fmap = self.backbone.to_map(x, tuple(self.backbone.input_size[-2:]))
            feats = [fmap if b == last else None for b in self.level_blocks]
            return self.decode_head.forward(feats).float().mean()
        return tail_loss

    # -- units -----------------------------------------------------------------------------
    @property
    def num_units(self) -> int:
        return self.backbone.num_modules

    def make_context(self, inputs: Tensor, data_samples: Optional[list]) -> LocalContext:
        targets = None
        if data_samples is not None and len(data_samples) and 'gt_sem_seg' in data_samples[0]:
            targets = torch.stack([ds.gt_sem_seg.data.reshape(ds.gt_sem_seg.data.shape[-2:])
                                   for ds in data_samples]).long().to(inputs.device)
            self._check_labels(targets)
        mean, std = pixel_stats(self.data_preprocessor)
        return LocalContext(inputs=inputs, targets=targets, data_samples=data_samples,
                            img_hw=tuple(inputs.shape[-2:]), pixel_mean=mean, pixel_std=std)

    def _check_labels(self, targets: Tensor) -> None:
        bad = (targets != self.ignore_index) & ((targets < 0) | (targets >= self.num_classes))
        if bool(bad.any()):
            vals = sorted(set(targets[bad].unique().tolist()))[:10]
            raise InputError(f'label values {vals} are outside the class range 0..{self.num_classes - 1} '
                             f'(and are not ignore_index={self.ignore_index}); check the annotations, '
                             'model.decode_head.num_classes and the data set\'s reduce_zero_label')

    def module_input(self, k: int, h: Tensor, ctx: LocalContext) -> Tensor:
        if self.context is None:
            return h
        return self.context(k, h, ctx, self.backbone.to_map)

    def _run_module(self, k: int, x: Tensor, img_hw: Tuple[int, int]) -> Tuple[Tensor, Dict[int, Tensor]]:
        """Module k's blocks; returns its output and the levels produced on the way."""
        seq = self.backbone.seq
        r = self.backbone.module_ranges()[k]
        last = len(seq) - 1
        levels: Dict[int, Tensor] = {}
        for i in r:
            x = seq.blocks[i](x)
            if i == last:
                x = seq.final_norm(x)
            for j, b in enumerate(self.level_blocks):
                if b == i:
                    levels[j] = self.backbone.to_map(x, img_hw)
        return x, levels

    def _aux_losses(self, k: int, feats: List[Optional[Tensor]], data_samples: list) -> Dict[str, Tensor]:
        losses: Dict[str, Tensor] = {}
        if not self.with_auxiliary_head:
            return losses
        units = self.aux_head_units()
        if isinstance(self.auxiliary_head, nn.ModuleList):
            for i, (head, u) in enumerate(zip(self.auxiliary_head, units)):
                if u == k:
                    losses.update(add_prefix(head.loss(feats, data_samples, self.train_cfg), f'aux_{i}'))
        elif units[0] == k:
            losses.update(add_prefix(self.auxiliary_head.loss(feats, data_samples, self.train_cfg), 'aux'))
        return losses

    def forward_unit(self, k: int, h: Tensor, ctx: LocalContext) -> Tuple[Tensor, Dict[str, Tensor]]:
        stored: Dict[int, Tensor] = ctx.extras.setdefault(LEVELS_KEY, {})
        if k == 0:
            stored.clear()
        out, live = self._run_module(k, self.module_input(k, h, ctx), ctx.img_hw)
        # earlier modules' levels are detached: no gradient crosses a cut
        feats = [live.get(j, stored.get(j)) for j in range(self.num_levels)]
        losses: Dict[str, Tensor] = {}
        if k < self.num_units - 1:
            later = self._levels_read_after(k)
            for j, f in live.items():
                if j in later:  # kept (detached) only when a later unit's head reads it
                    stored[j] = f.detach()
            local = self.objectives[k](self.backbone.to_map(out, ctx.img_hw), ctx)
            losses.update({f'm{k}.{n}': v for n, v in local.items()})
            losses.update(self._aux_losses(k, feats, ctx.data_samples))
            return out, losses
        missing = [j for j in self._levels_read_after(k - 1) if feats[j] is None]
        assert not missing, f'levels {missing} were not produced'
        if self.with_neck:
            feats = self.neck(feats)
        losses.update(self._decode_head_forward_train(feats, ctx.data_samples))
        losses.update(self._aux_losses(k, feats, ctx.data_samples))
        stored.clear()
        return out, losses

    forward_all_units = LocalLearningModel.forward_all_units
    train_step = LocalLearningModel.train_step

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        return self.forward_all_units(self.make_context(inputs, data_samples))

    def unit_parameters(self, k: int) -> List[nn.Parameter]:
        params = list(self.backbone.module_parameters(k))
        if k < self.num_units - 1:
            params += list(self.objectives[k].parameters())
        else:
            params += list(self.decode_head.parameters())
            if self.with_neck:
                params += list(self.neck.parameters())
        if self.with_auxiliary_head:
            heads = self.auxiliary_head if isinstance(self.auxiliary_head, nn.ModuleList) else [self.auxiliary_head]
            for head, u in zip(heads, self.aux_head_units()):
                if u == k:
                    params += list(head.parameters())
        if self.context is not None:
            params += self.context.parameters_of_module(k)
        return params

    # -- inference: the plain backbone path -------------------------------------------------
    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        img_hw = tuple(inputs.shape[-2:])
        ctx = LocalContext(inputs=inputs, img_hw=img_hw)
        levels: Dict[int, Tensor] = {}
        h = inputs
        for k in range(self.num_units):
            h, lv = self._run_module(k, self.module_input(k, h, ctx), img_hw)
            levels.update(lv)
        feats = [levels[j] for j in range(self.num_levels)]
        if self.with_neck:
            feats = self.neck(feats)
        return feats
