"""Object detection (mmdet 3.x) with a timm backbone split into K gradient-isolated modules.

:class:`LocalSingleStageDetector` (RetinaNet, FCOS, any single-stage ``bbox_head``) and
:class:`LocalTwoStageDetector` (Faster R-CNN: ``rpn_head`` + ``roi_head``) share
:class:`LocalDetectorMixin`: the backbone is a :class:`~localvision.models.split.StagedTimm`;
module k < K-1 is trained by its local objective (``InfoProDet`` / ``DetGreedy``) on its own
output map; the last module is trained by the neck and the detection head(s). The neck (FPN)
reads several backbone levels (the outputs of the stages in ``out_indices``, or of the blocks
in ``out_blocks``); levels produced by earlier modules are stored **detached** (and only when the
neck reads them), so each earlier module is trained by its own local loss only, and its graph is
freed right after its backward (``PerModuleBackward``). K=1 is plain end-to-end training of the
same network through the same code.

``predict`` / ``tensor`` modes are mmdet's, on :meth:`extract_feat` = the plain backbone path and
the neck (no auxiliary nets).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmdet.models.detectors.base import BaseDetector
from mmdet.models.detectors.single_stage import SingleStageDetector
from mmdet.models.detectors.two_stage import TwoStageDetector
from mmdet.registry import MODELS

from localvision.errors import InputError
from localvision.models.local_model import LocalLearningModel, build_executor
from localvision.models.objectives.base import LocalContext, build_objective, per_module_configs, pixel_stats
from localvision.models.split import StagedTimm
from localvision.models.split.block_sequence import block_shapes

Tensor = torch.Tensor

LEVELS_KEY = 'det.levels'
BACKBONE_DET_KEYS = ('frozen_stages', 'norm_eval')


def _sum_means(out) -> Tensor:
    """A scalar from nested head outputs (for the split's dry run)."""
    if isinstance(out, Tensor):
        return out.float().mean()
    if isinstance(out, (list, tuple)):
        vals = [_sum_means(o) for o in out if o is not None]
        return sum(vals) if vals else torch.zeros(())
    return torch.zeros(())


class LocalDetectorMixin(LocalLearningModel):
    """What RetinaNet / FCOS / Faster R-CNN share when their backbone is trained module by module.

    Backbone config (``model.backbone``): ``dict(model_name=..., pretrained=False, frozen_stages=-1,
    norm_eval=False, **timm_kwargs)``. ``frozen_stages`` (mmdet's meaning: -1 none, 0 the stem,
    s the stem and stages 1..s) and ``norm_eval`` (BatchNorm layers of the backbone kept in eval
    mode) default to -1 / False: right for training from scratch, where BN statistics must be
    learned and nothing is pretrained to freeze.
    """

    # -- construction ------------------------------------------------------------------------
    def _init_local_backbone(self, backbone: dict, split: Optional[dict], out_indices, out_blocks,
                             executor: Optional[dict]) -> None:
        with DefaultScope.overwrite_default_scope('localvision'):  # localvision's own registries
            self.executor = build_executor(executor)
        backbone = {k: v for k, v in dict(backbone).items() if k not in ('type', 'features_only', 'out_indices')}
        self.frozen_stages = int(backbone.pop('frozen_stages', -1))
        self.norm_eval = bool(backbone.pop('norm_eval', False))
        backbone.setdefault('num_classes', 0)
        self.backbone = StagedTimm(split=split, **backbone)
        self.level_blocks = self.backbone.level_blocks(out_indices, out_blocks)
        self._freeze_stages()

    def _fill_neck(self, neck: Optional[dict]) -> Optional[dict]:
        """``neck.in_channels`` follows the backbone levels (swapping the backbone is one line)."""
        if neck is None:
            return None
        neck = copy.deepcopy(dict(neck))
        chans = self.level_channels()
        if isinstance(neck.get('in_channels'), (list, tuple)):
            neck['in_channels'] = chans
        elif 'in_channels' in neck:
            neck['in_channels'] = chans[-1]
        return neck

    def _init_local_objectives(self, local_objective, num_classes: int) -> None:
        self.num_classes = num_classes
        k = self.backbone.requested_num_modules()
        with DefaultScope.overwrite_default_scope('localvision'):  # objectives live in localvision's registries
            cfgs = per_module_configs(local_objective, k - 1)
            self.backbone.resolve_split(exit_loss=self._exit_cost_fn(cfgs), tail_loss=self._tail_cost_fn(),
                                        extra_modules=self._task_modules())
            bb = self.backbone
            self.objectives = nn.ModuleList(
                build_objective(self._objective_cfg(c, i), bb.out_channels(i), num_classes, i, k)
                for i, c in enumerate(cfgs))
        self.context = None
        self._used_levels = self._levels_read_by_neck()
        self._check_levels()

    def _objective_cfg(self, cfg: dict, k: int) -> dict:
        cfg = dict(cfg)
        if cfg.get('type') in ('InfoProDet', 'DetGreedy'):
            cfg.setdefault('in_stride', self.backbone.seq.infos[self.backbone.module_ranges()[k][-1]].reduction)
        return cfg

    def _task_modules(self) -> List[nn.Module]:
        raise NotImplementedError

    # -- levels ------------------------------------------------------------------------------
    def level_channels(self) -> List[int]:
        return [self.backbone.seq.infos[b].num_chs for b in self.level_blocks]

    @property
    def num_levels(self) -> int:
        return len(self.level_blocks)

    def _levels_read_by_neck(self) -> List[int]:
        """The levels the neck actually reads (FPN: ``start_level .. backbone_end_level-1``;
        SimplePyramid: the last); the others are never stored."""
        n = self.num_levels
        neck = getattr(self, 'neck', None)
        if neck is None:
            return list(range(n))
        if hasattr(neck, 'start_level') and hasattr(neck, 'backbone_end_level'):
            return list(range(neck.start_level, neck.backbone_end_level))
        if type(neck).__name__ == 'SimplePyramid':
            return [n - 1]
        return list(range(n))

    def level_units(self) -> List[int]:
        """Which unit produces each level."""
        return [self.backbone.module_of_block(b) for b in self.level_blocks]

    def _check_levels(self) -> None:
        if not self.with_neck:
            raise InputError('model.neck is required: the detection heads read the neck outputs')
        if self.num_units == 1:
            return
        units = self.level_units()
        if all(units[i] < self.num_units - 1 for i in self._used_levels):
            raise InputError(f'the neck reads levels {self._used_levels} (blocks '
                             f'{[self.level_blocks[i] for i in self._used_levels]}), all produced before the last '
                             f'of the K={self.num_units} modules, so nothing would train the last module; '
                             f'move the cuts or add a level of blocks {list(self.backbone.module_ranges()[-1])}')

    # -- frozen stages / norm_eval ---------------------------------------------------------------
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for info in self.backbone.seq.infos:
            if info.stage <= self.frozen_stages:
                for m in info.modules:
                    m.eval()
                for p in info.parameters():
                    p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # -- split profiling (balanced strategy) ----------------------------------------------------
    def _exit_cost_fn(self, cfgs: List[dict]):
        if not cfgs:
            return None
        cache: Dict[Tuple[int, int], nn.Module] = {}
        seq = self.backbone.seq

        def exit_loss(i: int, fmap: Tensor) -> Tensor:
            key = (fmap.shape[1], seq.infos[i].reduction)
            if key not in cache:
                cfg = dict(cfgs[0])
                if cfg.get('type') in ('InfoProDet', 'DetGreedy'):
                    cfg.setdefault('in_stride', seq.infos[i].reduction)
                cache[key] = build_objective(cfg, fmap.shape[1], self.num_classes, 0, len(cfgs) + 1).to(fmap.device)
            image = torch.zeros(fmap.shape[0], *self.backbone.input_size, device=fmap.device)
            h, w = image.shape[-2:]
            box = torch.tensor([[w * 0.2, h * 0.2, w * 0.6, h * 0.7], [w * 0.5, h * 0.1, w * 0.9, h * 0.4]],
                               device=fmap.device)
            targets = [(box, torch.zeros(2, dtype=torch.long, device=fmap.device)) for _ in range(fmap.shape[0])]
            ctx = LocalContext(inputs=image, targets=targets, img_hw=(h, w))
            return sum(v for n, v in cache[key](fmap, ctx).items() if 'loss' in n)
        return exit_loss

    def _tail_cost_fn(self):
        """What the neck, the heads and their losses save, counted with the last module.

        Levels of earlier modules are zeros of their shape (the neck saves the same on them); the
        heads' losses run on a few synthetic boxes per image, so e.g. RetinaNet's focal loss over
        all anchors and classes is counted: at 512x512 it is a large part of the last module.
        """
        bb = self.backbone
        last = len(bb.seq) - 1
        shapes: List = []

        def tail_loss(x: Tensor) -> Tensor:
            if not shapes:  # only the balanced strategy calls this: measure the level shapes then
                shapes.extend(block_shapes(bb.seq, bb.input_size))
            fmap = bb.to_map(x, tuple(bb.input_size[-2:]))
            feats = []
            for b in self.level_blocks:
                if b == last:
                    feats.append(fmap)
                else:
                    feats.append(torch.zeros(fmap.shape[0], *shapes[b][1:], device=fmap.device))
            feats = [f if j in self._levels_read_by_neck() else None for j, f in enumerate(feats)]
            losses = self.head_losses(self.neck(feats), self._synthetic_samples(fmap.shape[0], fmap.device))
            return sum(_sum_means(v) for k, v in losses.items() if 'loss' in k)
        return tail_loss

    def _synthetic_samples(self, n: int, device) -> list:
        """A few boxes per image, as the data pipeline would give them (for the split's dry run)."""
        from mmengine.structures import InstanceData
        from mmdet.structures import DetDataSample
        h, w = self.backbone.input_size[-2:]
        samples = []
        for _ in range(n):
            gi = InstanceData()
            gi.bboxes = torch.tensor([[w * 0.1, h * 0.1, w * 0.4, h * 0.5], [w * 0.5, h * 0.3, w * 0.9, h * 0.9],
                                      [w * 0.3, h * 0.6, w * 0.45, h * 0.75]], device=device)
            gi.labels = torch.zeros(3, dtype=torch.long, device=device)
            ds = DetDataSample()
            ds.gt_instances = gi
            ds.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                                 scale_factor=(1.0, 1.0)))
            samples.append(ds)
        return samples

    # -- units ----------------------------------------------------------------------------------
    @property
    def num_units(self) -> int:
        return self.backbone.num_modules

    def make_context(self, inputs: Tensor, data_samples: Optional[list]) -> LocalContext:
        targets = None
        if data_samples is not None and len(data_samples) and 'gt_instances' in data_samples[0]:
            targets = []
            for ds in data_samples:
                gi = ds.gt_instances
                boxes = gi.bboxes
                boxes = boxes.tensor if hasattr(boxes, 'tensor') else boxes
                labels = gi.labels.long()
                self._check_labels(labels, ds)
                targets.append((boxes.to(inputs.device).float(), labels.to(inputs.device)))
        mean, std = pixel_stats(self.data_preprocessor)
        return LocalContext(inputs=inputs, targets=targets, data_samples=data_samples,
                            img_hw=tuple(inputs.shape[-2:]), pixel_mean=mean, pixel_std=std)

    def _check_labels(self, labels: Tensor, ds) -> None:
        bad = (labels < 0) | (labels >= self.num_classes)
        if bool(bad.any()):
            where = ds.metainfo.get('img_path', ds.metainfo.get('img_id', '?'))
            raise InputError(f'image {where}: labels {sorted(set(labels[bad].tolist()))} are outside the class range '
                             f'0..{self.num_classes - 1}; check the annotations and the head\'s num_classes')

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

    def forward_unit(self, k: int, h: Tensor, ctx: LocalContext) -> Tuple[Tensor, Dict[str, Tensor]]:
        stored: Dict[int, Tensor] = ctx.extras.setdefault(LEVELS_KEY, {})
        if k == 0:
            stored.clear()
        out, live = self._run_module(k, h, ctx.img_hw)
        used = self._used_levels
        if k < self.num_units - 1:
            for j, f in live.items():
                if j in used:  # kept for the neck, detached: no gradient crosses a cut
                    stored[j] = f.detach()
            local = self.objectives[k](self.backbone.to_map(out, ctx.img_hw), ctx)
            return out, {f'm{k}.{n}': v for n, v in local.items()}
        feats = [(live[j] if j in live else stored.get(j)) if j in used else None for j in range(self.num_levels)]
        missing = [j for j in used if feats[j] is None]
        assert not missing, f'levels {missing} were not produced'
        stored.clear()
        x = self.neck(feats)
        return out, self.head_losses(x, ctx.data_samples)

    def head_losses(self, x, data_samples: list) -> Dict[str, Tensor]:
        raise NotImplementedError

    forward_all_units = LocalLearningModel.forward_all_units
    train_step = LocalLearningModel.train_step

    def loss(self, batch_inputs: Tensor, batch_data_samples: list) -> Dict[str, Tensor]:
        return self.forward_all_units(self.make_context(batch_inputs, batch_data_samples))

    def unit_parameters(self, k: int) -> List[nn.Parameter]:
        params = list(self.backbone.module_parameters(k))
        if k < self.num_units - 1:
            params += list(self.objectives[k].parameters())
        else:
            params += list(self.neck.parameters())
            for m in self._task_modules():
                params += list(m.parameters())
        return params

    # -- inference: the plain backbone path -------------------------------------------------------
    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        img_hw = tuple(batch_inputs.shape[-2:])
        levels: Dict[int, Tensor] = {}
        h = batch_inputs
        for k in range(self.num_units):
            h, lv = self._run_module(k, h, img_hw)
            levels.update(lv)
        feats = [levels[j] if j in self._used_levels else None for j in range(self.num_levels)]
        return self.neck(feats)


@MODELS.register_module()
class LocalSingleStageDetector(LocalDetectorMixin, SingleStageDetector):
    """A single-stage detector (RetinaNet, FCOS, ...) on a timm backbone trained as K modules.

    Args:
        backbone: ``dict(model_name=..., pretrained=False, frozen_stages=-1, norm_eval=False,
            **timm_kwargs)`` (``type`` ignored).
        neck / bbox_head / train_cfg / test_cfg / data_preprocessor: as for SingleStageDetector;
            ``neck.in_channels`` is filled in from the backbone levels.
        split: see :class:`StagedTimm` (``num_modules`` / ``cuts`` / ``strategy`` / ``input_size``).
        out_indices: stages whose last block output is a level (default: every stage after the
            stem; for a ResNet stage 1..4 = layer1..layer4 = mmdet's ResNet ``out_indices`` 0..3).
        out_blocks: flat block indices giving the levels instead (a ViT: ``(12,)``).
        local_objective: one objective config for all local modules, or a list of K-1.
        executor: ``PerModuleBackward`` (default) or ``JointBackward``.
    """

    def __init__(self, backbone: dict, neck: Optional[dict] = None, bbox_head: Optional[dict] = None,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None, split: Optional[dict] = None,
                 out_indices: Optional[Sequence[int]] = None, out_blocks: Optional[Sequence[int]] = None,
                 local_objective: Union[dict, List[dict], None] = None, executor: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        BaseDetector.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        train_cfg = ConfigDict(train_cfg) if train_cfg is not None else None
        test_cfg = ConfigDict(test_cfg) if test_cfg is not None else None
        self._init_local_backbone(backbone, split, out_indices, out_blocks, executor)
        neck = self._fill_neck(neck)
        if neck is not None:
            self.neck = MODELS.build(neck)
        if bbox_head is None:
            raise InputError('model.bbox_head is required for LocalSingleStageDetector')
        bbox_head = copy.deepcopy(dict(bbox_head))
        bbox_head.update(train_cfg=train_cfg, test_cfg=test_cfg)
        self.bbox_head = MODELS.build(bbox_head)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self._init_local_objectives(local_objective, self.bbox_head.num_classes)

    def _task_modules(self) -> List[nn.Module]:
        return [self.bbox_head]

    def head_losses(self, x, data_samples: list) -> Dict[str, Tensor]:
        return self.bbox_head.loss(x, data_samples)


@MODELS.register_module()
class LocalTwoStageDetector(LocalDetectorMixin, TwoStageDetector):
    """A two-stage detector (Faster R-CNN) on a timm backbone trained as K modules.

    The RPN and the RoI head are trained by the last module's loss, on the neck's outputs.
    Arguments as :class:`LocalSingleStageDetector`, with ``rpn_head`` / ``roi_head`` as for
    mmdet's TwoStageDetector.
    """

    def __init__(self, backbone: dict, neck: Optional[dict] = None, rpn_head: Optional[dict] = None,
                 roi_head: Optional[dict] = None, train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 split: Optional[dict] = None, out_indices: Optional[Sequence[int]] = None,
                 out_blocks: Optional[Sequence[int]] = None, local_objective: Union[dict, List[dict], None] = None,
                 executor: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        BaseDetector.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        train_cfg = ConfigDict(train_cfg) if train_cfg is not None else None
        test_cfg = ConfigDict(test_cfg) if test_cfg is not None else None
        self._init_local_backbone(backbone, split, out_indices, out_blocks, executor)
        neck = self._fill_neck(neck)
        if neck is not None:
            self.neck = MODELS.build(neck)
        if rpn_head is None or roi_head is None:
            raise InputError('model.rpn_head and model.roi_head are required for LocalTwoStageDetector')
        rpn_head_ = copy.deepcopy(dict(rpn_head))
        rpn_head_.update(train_cfg=train_cfg.rpn if train_cfg is not None else None, test_cfg=test_cfg.rpn,
                         num_classes=1)
        self.rpn_head = MODELS.build(rpn_head_)
        roi_head = copy.deepcopy(dict(roi_head))
        roi_head.update(train_cfg=train_cfg.rcnn if train_cfg is not None else None, test_cfg=test_cfg.rcnn)
        self.roi_head = MODELS.build(roi_head)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self._init_local_objectives(local_objective, self.roi_head.bbox_head.num_classes)

    def _task_modules(self) -> List[nn.Module]:
        return [self.rpn_head, self.roi_head]

    def head_losses(self, x, data_samples: list) -> Dict[str, Tensor]:
        """TwoStageDetector.loss on given features: RPN (class-agnostic) and RoI head losses."""
        losses: Dict[str, Tensor] = {}
        proposal_cfg = self.train_cfg.get('rpn_proposal', self.test_cfg.rpn)
        rpn_data_samples = copy.deepcopy(data_samples)
        for ds in rpn_data_samples:
            ds.gt_instances.labels = torch.zeros_like(ds.gt_instances.labels)
        rpn_losses, rpn_results_list = self.rpn_head.loss_and_predict(x, rpn_data_samples,
                                                                      proposal_cfg=proposal_cfg)
        for key in list(rpn_losses.keys()):
            if 'loss' in key and 'rpn' not in key:
                rpn_losses[f'rpn_{key}'] = rpn_losses.pop(key)
        losses.update(rpn_losses)
        losses.update(self.roi_head.loss(x, rpn_results_list, data_samples))
        return losses
