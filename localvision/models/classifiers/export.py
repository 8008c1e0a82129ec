"""Export a trained :class:`LocalImageClassifier` to a checkpoint that stock timm loads.

The timm model owns every parameter of the classifier, its head included, so the export is the
timm model's own state dict: ``backbone.model.<timm key>`` -> ``<timm key>``; the auxiliary nets of
local learning (``objectives.*``) are dropped. The file is ``dict(state_dict=..., meta=...)``,
which timm's ``load_checkpoint`` reads (key ``state_dict``, ``weights_only=True``), so

    timm.create_model(model_name, num_classes=N, <the config's timm arguments>, checkpoint_path=OUT)

rebuilds the trained network without localvision and gives the logits of
``forward(mode='tensor')``. ``OUT_config.json`` next to it records that call and the input
normalisation the model was trained with (the config's ``data_preprocessor``), which timm's
defaults do not know.

Refused with one line each: a context supply (``model.context``, ContSup), whose context path
runs at inference and has no counterpart in a timm model; backbones that only exist in timm
through localvision (the CIFAR ResNets).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from localvision.errors import InputError
from localvision.utils.export import check_stock_timm_model, save_stock_checkpoint

TIMM_PREFIX = 'backbone.model.'
DROPPED_PREFIXES = ('objectives.', 'data_preprocessor.')  # auxiliary nets; the preprocessor has no weights


def check_no_context(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Refuse a model with a context supply (in the config or in the checkpoint's keys)."""
    if getattr(model, 'context', None) is not None or any(k.startswith('context.') for k in state):
        raise InputError('the model has a context supply (model.context, ContSup): its context path feeds every '
                         'module after the first at inference too, which a stock timm model has no place for, so it '
                         'cannot be exported to timm; export a model trained without model.context, or evaluate '
                         'this one with tools/test.py')


def export_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The timm model's weights under timm's own keys; auxiliary nets dropped."""
    out: Dict[str, torch.Tensor] = OrderedDict()
    other = []
    for k, v in model.state_dict().items():
        if k.startswith(TIMM_PREFIX):
            out[k[len(TIMM_PREFIX):]] = v.detach().clone()
        elif not k.startswith(DROPPED_PREFIXES):
            other.append(k)
    if other:
        raise InputError(f'weights {other[:3]} belong neither to the timm model nor to the auxiliary nets; stock '
                         'timm has nowhere to put them, so the model cannot be exported')
    return out


def timm_arguments(model: nn.Module) -> Tuple[str, Dict[str, Any]]:
    """``(model_name, kwargs)`` of the ``timm.create_model`` call that builds the trained network
    (what the backbone gave timm, without the local weights file)."""
    kwargs = {k: v for k, v in model.backbone.timm_kwargs.items() if k != 'num_classes'}
    return model.backbone.model_name, dict(num_classes=model.backbone.model.num_classes, **kwargs)


def timm_command(model_name: str, kwargs: Mapping[str, Any], checkpoint: str) -> str:
    """The stock call, e.g. ``timm.create_model('resnet18', num_classes=10, checkpoint_path='out.pth')``."""
    args = [repr(model_name)] + [f'{k}={v!r}' for k, v in kwargs.items()] + [f'checkpoint_path={checkpoint!r}']
    return f"timm.create_model({', '.join(args)})"


def stock_command(out_config: str) -> str:
    """The stock call recorded in an exported ``OUT_config.json``."""
    with open(out_config) as f:
        return json.load(f)['stock']


def export(cfg, checkpoint: str, out: str, out_config: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """Build the classifier of ``cfg``, load ``checkpoint``, write the timm checkpoint ``out`` and
    ``out_config`` (default ``<out>_config.json``: the ``timm.create_model`` call and the input
    normalisation)."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import CheckpointLoader, load_state_dict

    from localvision.registry import MODELS
    from localvision.utils import allow_mmengine_checkpoints
    if cfg.model.get('type') != 'LocalImageClassifier':
        raise InputError(f"model.type={cfg.model.get('type')!r}: only LocalImageClassifier models are exported here")
    init_default_scope(cfg.get('default_scope', 'localvision'))
    model = MODELS.build(cfg.model)
    check_stock_timm_model(model.backbone.model_name, 'timm')
    allow_mmengine_checkpoints()
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    check_no_context(model, state)
    load_state_dict(model, state, strict=True)
    save_stock_checkpoint(export_state_dict(model), ckpt, out)

    name, kwargs = timm_arguments(model)
    out_config = out_config or out.rsplit('.', 1)[0] + '_config.json'
    record = dict(stock=timm_command(name, kwargs, out), model_name=name, kwargs=kwargs,
                  data_preprocessor=cfg.model.to_dict().get('data_preprocessor'),
                  note='the model takes images normalised as data_preprocessor does (mean / std of 0-255 pixels)')
    with open(out_config, 'w') as f:
        json.dump(record, f, indent=2, default=repr)
    return out, out_config
