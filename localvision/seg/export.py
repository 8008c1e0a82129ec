"""Export a trained :class:`LocalEncoderDecoder` to a checkpoint + config that stock mmseg loads.

The exported model is mmseg's ``EncoderDecoder`` with ``TIMMBackbone(features_only=True,
pretrained=False, out_indices=...)``: the auxiliary nets of local learning (local objectives)
are dropped and the backbone keys are mapped from ``backbone.model.*`` (the timm model) to
``backbone.timm_model.*`` (timm's feature extractor, which keeps the same module names).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

from localvision.errors import InputError
from localvision.utils.export import save_stock_checkpoint, stock_config

LOCAL_KEYS = ('split', 'out_indices', 'out_blocks', 'local_objective', 'context', 'executor')


def check_stock_timm_model(model_name: str) -> None:
    """Stock mmseg builds the backbone with timm alone: models localvision adds to timm (the CIFAR
    ResNets) do not exist there."""
    from timm.models import is_model
    from timm.models._registry import _model_entrypoints
    entry = _model_entrypoints.get(model_name) if is_model(model_name) else None
    if entry is not None and not entry.__module__.startswith('timm.'):
        raise InputError(f'backbone {model_name} is registered in timm by {entry.__module__}, so stock mmseg '
                         '(without localvision) cannot build it; export models with a timm backbone '
                         '(e.g. resnet50d, convnext_tiny)')


def timm_out_indices(model) -> List[int]:
    """timm ``features_only`` indices giving exactly the segmentor's levels."""
    check_stock_timm_model(model.backbone.model_name)
    seq = model.backbone.seq
    fi = model.backbone.model.feature_info
    names = [f['module'] for f in fi]
    out = []
    for b in model.level_blocks:
        info = seq.infos[b]
        match = [i for i, n in enumerate(names) if info.name == n or info.name.startswith(n + '.')]
        is_last = match and all(not (o.name == names[match[-1]] or o.name.startswith(names[match[-1]] + '.'))
                                for o in seq.infos[b + 1:])
        if not match or not is_last:
            raise InputError(f'level block {info.name} of {model.backbone.model_name} is not the end of a timm feature '
                             f'stage ({names}); stock TIMMBackbone cannot produce it, so it cannot be exported')
        out.append(match[-1])
    if seq.family != 'resnet' and seq.family != 'convnext':
        raise InputError(f'export supports the ResNet and ConvNeXt families, not {seq.family}')
    return out


def export_state_dict(model) -> Dict[str, torch.Tensor]:
    """The segmentor's weights with mmseg's TIMMBackbone names; local objectives dropped."""
    if getattr(model, 'context', None) is not None:
        raise InputError('a model with a context supply (model.context) runs the context path at inference; '
                         'stock mmseg has no such path, so it cannot be exported')
    out = OrderedDict()
    for k, v in model.state_dict().items():
        if k.startswith('objectives.') or k.startswith('data_preprocessor.'):
            continue
        if k.startswith('backbone.model.'):
            k = 'backbone.timm_model.' + k[len('backbone.model.'):]
        out[k] = v.detach().clone()
    return out


def stock_model_cfg(model_cfg: dict, model) -> dict:
    """The ``model`` config of the same network as a stock mmseg ``EncoderDecoder``."""
    cfg = copy.deepcopy(dict(model_cfg))
    for k in LOCAL_KEYS:
        cfg.pop(k, None)
    bb = {k: v for k, v in dict(cfg['backbone']).items() if k not in ('type', 'checkpoint_path', 'num_classes')}
    bb.update(type='TIMMBackbone', features_only=True, pretrained=False, out_indices=tuple(timm_out_indices(model)))
    cfg.update(type='EncoderDecoder', backbone=bb, pretrained=None)
    cfg['decode_head'] = dict(cfg['decode_head'], in_channels=model.decode_head.in_channels)
    if cfg.get('auxiliary_head') is not None:
        aux = cfg['auxiliary_head']
        if isinstance(aux, (list, tuple)):
            cfg['auxiliary_head'] = [dict(a, in_channels=h.in_channels) for a, h in zip(aux, model.auxiliary_head)]
        else:
            cfg['auxiliary_head'] = dict(aux, in_channels=model.auxiliary_head.in_channels)
    return cfg


def export(cfg, checkpoint: str, out: str, out_config: str = None) -> Tuple[str, str]:
    """Build the model of ``cfg``, load ``checkpoint``, write the stock checkpoint (and config)."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS

    import localvision.seg  # noqa: F401
    init_default_scope('mmseg')
    if cfg.model.get('type') != 'LocalEncoderDecoder':
        raise InputError(f"model.type={cfg.model.get('type')!r}: only LocalEncoderDecoder models are exported")
    model = MODELS.build(cfg.model)
    stock_model = stock_model_cfg(cfg.model.to_dict(), model)  # refuses unsupported backbones before loading
    ckpt = load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    save_stock_checkpoint(export_state_dict(model), ckpt, out)
    stock, out_config = stock_config(cfg, stock_model, out, out_config)
    stock.dump(out_config)
    return out, out_config
