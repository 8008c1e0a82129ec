"""Export a trained local detector to a checkpoint + config that stock mmdet loads.

The exported model is mmdet's own ``SingleStageDetector`` / ``TwoStageDetector`` (``MaskRCNN`` when
the RoI head has a mask head) with mmdet's
``ResNet`` backbone: a plain timm ResNet (``resnet18/34/50/101/152``: 7x7 stem, strided 3x3 in
the bottleneck, 1x1 projection shortcuts) has exactly the layout of mmdet's ResNet with
``style='pytorch'``, and the same parameter names under ``layer*`` / ``conv1`` / ``bn1``; only the
prefix changes (``backbone.model.*`` -> ``backbone.*``). The auxiliary nets of local learning
(local objectives) are dropped. Other timm backbones become mmpretrain's
``TIMMBackbone(features_only=True)`` (the config imports ``mmpretrain.models``) where timm's feature
extractor gives the detector's levels, checked at export as for mmseg; its training options
(``frozen_stages``, ``norm_eval``) are not carried over, inference is the same. Data sets of
localvision in the config become mmdet's ``CocoDataset`` with the same classes, and localvision's
``custom_imports`` is removed, so the exported config does not need localvision.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from localvision.errors import InputError
from localvision.utils.export import StockExport, stock_state_dict, timm_features_backbone

LOCAL_KEYS = ('split', 'local_objective', 'context', 'executor')
LOCAL_TYPES = {'LocalSingleStageDetector': 'SingleStageDetector', 'LocalTwoStageDetector': 'TwoStageDetector'}
LOCAL_DATASETS = ('ShapesDetDataset', 'ShapesInstDataset', 'CheckedCocoDataset')
DEPTHS = {('BasicBlock', (2, 2, 2, 2)): 18, ('BasicBlock', (3, 4, 6, 3)): 34, ('Bottleneck', (3, 4, 6, 3)): 50,
          ('Bottleneck', (3, 4, 23, 3)): 101, ('Bottleneck', (3, 8, 36, 3)): 152}


def mmdet_resnet_depth(timm_model: nn.Module, name: str) -> int:
    """The depth of mmdet's ResNet that has exactly this timm model's layout, or raise."""
    from timm.models.resnet import ResNet
    why = None
    if not isinstance(timm_model, ResNet):
        why = 'it is not a timm ResNet'
    elif not isinstance(timm_model.conv1, nn.Conv2d) or timm_model.conv1.kernel_size != (7, 7):
        why = 'its stem is not the plain 7x7 conv (deep / tiered stem: resnet*d, resnet*t)'
    else:
        blocks = [len(getattr(timm_model, f'layer{i}')) for i in range(1, 5)]
        first = timm_model.layer1[0]
        kind = type(first).__name__
        for i in range(1, 5):
            ds = getattr(timm_model, f'layer{i}')[0].downsample
            if ds is not None and not isinstance(ds[0], nn.Conv2d):
                why = 'its shortcuts average-pool (avg_down: resnet*d)'
        extras = [n for n in ('se', 'aa', 'drop_block') if not isinstance(getattr(first, n, None), (type(None), nn.Identity))]
        if extras:
            why = f'its blocks have {extras}'
        if getattr(first, 'conv2', None) is not None and getattr(first.conv2, 'groups', 1) != 1:
            why = 'its blocks are grouped (ResNeXt)'
        if why is None and (kind, tuple(blocks)) not in DEPTHS:
            why = f'{kind} x {blocks} is none of ResNet-18/34/50/101/152'
        if why is None:
            return DEPTHS[(kind, tuple(blocks))]
    raise InputError(f'backbone {name} cannot be exported to stock mmdet: {why}; export supports the plain timm '
                     'ResNets (resnet18, resnet34, resnet50, resnet101, resnet152), which are mmdet\'s ResNet')


def mmdet_out_indices(model) -> List[int]:
    """mmdet ResNet ``out_indices`` (0 = layer1) giving exactly the detector's levels."""
    seq = model.backbone.seq
    out = []
    for b in model.backbone.level_blocks:
        info = seq.infos[b]
        last_of_stage = max(i.index for i in seq.infos if i.stage == info.stage)
        if info.stage == 0 or b != last_of_stage:
            raise InputError(f'level block {info.name} is not the end of a ResNet stage; mmdet\'s ResNet cannot '
                             'produce it, so the model cannot be exported')
        out.append(info.stage - 1)
    return out


def stock_backbone(model) -> Tuple[dict, Optional[Dict[str, str]]]:
    """The stock backbone config: mmdet's ``ResNet`` where the timm model has its layout (key map
    None: only the prefix changes), else mmpretrain's ``TIMMBackbone(features_only=True)`` where
    timm's feature extractor gives the detector's levels (with ``{timm key: extractor key}``)."""
    try:
        depth = mmdet_resnet_depth(model.backbone.model, model.backbone.model_name)
    except InputError as not_resnet:
        try:
            import mmpretrain.models  # noqa: F401  (the stock TIMMBackbone for mmdet)
        except ImportError:
            raise not_resnet from None
        extra, keys = timm_features_backbone(model, 'mmdet')
        bb = {k: v for k, v in model.backbone.timm_kwargs.items() if k != 'num_classes'}
        bb.update(type='mmpretrain.TIMMBackbone', model_name=model.backbone.model_name, features_only=True,
                  pretrained=False, **extra)
        return bb, keys
    return dict(type='ResNet', depth=depth, num_stages=4, out_indices=tuple(mmdet_out_indices(model)),
                frozen_stages=model.backbone.frozen_stages, norm_cfg=dict(type='BN', requires_grad=True),
                norm_eval=model.backbone.norm_eval, style='pytorch', init_cfg=None), None


def export_state_dict(model) -> Dict[str, torch.Tensor]:
    """The detector's weights with the stock backbone's names; local objectives dropped."""
    keys = stock_backbone(model)[1]

    def backbone_key(rest: str) -> Optional[str]:
        if keys is None:  # mmdet's ResNet: the timm names, without the classifier
            return None if rest.startswith('fc.') else 'backbone.' + rest
        return 'backbone.timm_model.' + keys[rest] if rest in keys else None  # None: not in the extractor
    return stock_state_dict(model, backbone_key)


def _stock_dataset(ds, classes) -> None:
    if isinstance(ds, dict):
        if ds.get('type') in LOCAL_DATASETS:
            ds['type'] = 'CocoDataset'
            ds['metainfo'] = dict(classes=tuple(classes))
            ds.pop('check_annotations', None)
            ds.pop('check_masks', None)
        for v in ds.values():
            _stock_dataset(v, classes)
    elif isinstance(ds, (list, tuple)):
        for v in ds:
            _stock_dataset(v, classes)


def _stock_losses(cfg):
    """localvision's LowMemFocalLoss is mmdet's FocalLoss (same values) for stock mmdet."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'LowMemFocalLoss':
            cfg['type'] = 'FocalLoss'
        for v in cfg.values():
            _stock_losses(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            _stock_losses(v)


def stock_model_cfg(model_cfg: dict, model) -> dict:
    """The ``model`` config of the same network as a stock mmdet detector."""
    cfg = copy.deepcopy(dict(model_cfg))
    for k in LOCAL_KEYS:
        cfg.pop(k, None)
    cfg['backbone'] = stock_backbone(model)[0]
    cfg['type'] = LOCAL_TYPES[cfg['type']]
    if cfg['type'] == 'TwoStageDetector' and (cfg.get('roi_head') or {}).get('mask_head') is not None:
        cfg['type'] = 'MaskRCNN'  # mmdet's MaskRCNN is a TwoStageDetector; the name tells what it is
    _stock_losses(cfg)
    if cfg.get('neck') is not None and 'in_channels' in cfg['neck']:
        neck_in = model.backbone.level_channels()
        cfg['neck'] = dict(cfg['neck'], in_channels=neck_in if isinstance(cfg['neck']['in_channels'], (list, tuple))
                           else neck_in[-1])
    return cfg


def stock_classes(cfg, meta: dict) -> Optional[tuple]:
    """The class names of the trained model (its checkpoint's ``dataset_meta``, else the
    localvision data set of the config)."""
    classes = (meta.get('dataset_meta') or {}).get('classes')
    if classes is None:
        from mmdet.registry import DATASETS
        for key in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
            t = cfg.get(key, {}).get('dataset', {}).get('type')
            if t in LOCAL_DATASETS:
                classes = DATASETS.get(t).METAINFO.get('classes')
                break
    return classes


class MmdetExport(StockExport):
    """A local detector as mmdet's ``SingleStageDetector`` / ``TwoStageDetector`` / ``MaskRCNN``;
    localvision's data sets in the config become mmdet's ``CocoDataset`` with the same classes."""

    library = 'mmdet'
    api = 'mmdet.apis.init_detector'

    def stock_model(self, cfg, model) -> dict:
        return stock_model_cfg(cfg.model.to_dict(), model)

    state_dict = staticmethod(export_state_dict)

    def stock_cfg(self, stock, model, meta) -> None:
        classes = stock_classes(stock, meta)
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if key in stock and classes is not None:
                d = stock[key].to_dict() if hasattr(stock[key], 'to_dict') else stock[key]
                _stock_dataset(d, classes)
                stock[key] = d
        if stock.model.backbone.type.startswith('mmpretrain.'):
            stock.custom_imports = dict(imports=['mmpretrain.models'], allow_failed_imports=False)
