"""Export a trained :class:`LocalImageClassifier` to a checkpoint that stock timm loads.

The trained network is the timm model (built without its classifier) plus the mmpretrain head's
linear layer; stock timm holds both in one model: ``backbone.model.<timm key>`` -> ``<timm key>``
and the head's ``Linear`` -> the timm classifier (``fc`` of a ResNet, ``head`` of a ViT,
``head.fc`` of a ConvNeXt...); the auxiliary nets of local learning (``objectives.*``) are
dropped. The file is ``dict(state_dict=..., meta=...)``, which timm's ``load_checkpoint`` reads, so

    timm.create_model(model_name, num_classes=N, <the config's timm arguments>, checkpoint_path=OUT)

rebuilds the trained network without localvision and gives the logits of
``forward(mode='tensor')``. ``OUT_config.json`` next to it records that call and the input
normalisation the model was trained with (the config's ``data_preprocessor``), which timm's
defaults do not know.

Refused with one line each: a context supply (``model.context``, ContSup), whose context path
runs at inference and has no counterpart in a timm model; backbones that only exist in timm
through localvision (the CIFAR ResNets); heads other than one linear layer on timm's pooling
(``neck=None`` or ``GlobalAveragePooling``), which timm's classifier cannot hold.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Tuple

import torch
import torch.nn as nn

from localvision.errors import InputError
from localvision.utils.export import DROPPED_PREFIXES, TIMM_PREFIX, StockExport, check_stock_timm_model, stock_state_dict

STOCK_NECKS = (None, 'GlobalAveragePooling')


def head_linear(model: nn.Module) -> Tuple[str, nn.Linear]:
    """The head's one linear layer (``head.<name>``), refusing heads timm's classifier cannot hold."""
    neck = None if model.neck is None else type(model.neck).__name__
    linears = [(n, m) for n, m in model.head.named_modules() if isinstance(m, nn.Linear)]
    params = sum(1 for _ in model.head.parameters())
    if neck not in STOCK_NECKS or len(linears) != 1 or params != sum(1 for _ in linears[0][1].parameters()):
        raise InputError(f'model.neck={neck} with model.head={type(model.head).__name__}: stock timm holds one '
                         'linear classifier on its own pooling, so only neck=None or GlobalAveragePooling with a '
                         'single-linear head (LinearClsHead, VisionTransformerClsHead without hidden_dim) export')
    return f'head.{linears[0][0]}', linears[0][1]


def timm_arguments(model: nn.Module) -> Tuple[str, Dict[str, Any]]:
    """``(model_name, kwargs)`` of the ``timm.create_model`` call that builds the trained network
    (what the backbone gave timm, without the local weights file, and the head's classes)."""
    kwargs = {k: v for k, v in model.backbone.timm_kwargs.items() if k != 'num_classes'}
    return model.backbone.model_name, dict(num_classes=model.head.num_classes, **kwargs)


def timm_classifier_name(model: nn.Module) -> str:
    """Where the stock timm model keeps its classifier (``fc``, ``head``, ``head.fc``...)."""
    import timm
    name, kwargs = timm_arguments(model)
    with torch.device('meta'):
        stock = timm.create_model(name, **kwargs)
    target = stock.get_classifier()
    return next(n for n, m in stock.named_modules() if m is target)


def export_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The trained network under stock timm's keys; auxiliary nets dropped."""
    head_name, linear = head_linear(model)
    other = [k for k in model.state_dict() if not k.startswith((TIMM_PREFIX, head_name + '.', *DROPPED_PREFIXES))]
    if other:
        raise InputError(f'weights {other[:3]} belong neither to the timm model nor to the auxiliary nets; stock '
                         'timm has nowhere to put them, so the model cannot be exported')
    out = stock_state_dict(model, lambda rest: rest)
    for k in [k for k in out if k.startswith(head_name + '.')]:
        del out[k]
    classifier = timm_classifier_name(model)
    for n, p in linear.state_dict().items():
        out[f'{classifier}.{n}'] = p.detach().clone()
    return out


def timm_command(model_name: str, kwargs: Mapping[str, Any], checkpoint: str) -> str:
    """The stock call, e.g. ``timm.create_model('resnet18', num_classes=10, checkpoint_path='out.pth')``."""
    args = [repr(model_name)] + [f'{k}={v!r}' for k, v in kwargs.items()] + [f'checkpoint_path={checkpoint!r}']
    return f"timm.create_model({', '.join(args)})"


def stock_command(out_config: str) -> str:
    """The stock call recorded in an exported ``OUT_config.json``."""
    with open(out_config) as f:
        return json.load(f)['stock']


class TimmExport(StockExport):
    """A :class:`LocalImageClassifier` as a timm model (head included); the config is
    ``OUT_config.json``: the ``timm.create_model`` call and the input normalisation."""

    library = 'timm'

    def stock_model(self, cfg, model) -> Tuple[str, Dict[str, Any]]:
        check_stock_timm_model(model.backbone.model_name, 'timm')
        head_linear(model)
        return timm_arguments(model)

    state_dict = staticmethod(export_state_dict)

    def write_config(self, cfg, model, stock_model, meta, out, out_config) -> str:
        name, kwargs = stock_model
        out_config = out_config or out.rsplit('.', 1)[0] + '_config.json'
        preprocessor = cfg.model.to_dict().get('data_preprocessor') or cfg.to_dict().get('data_preprocessor')
        record = dict(stock=timm_command(name, kwargs, out), model_name=name, kwargs=kwargs,
                      data_preprocessor=preprocessor,
                      note='the model takes images normalised as data_preprocessor does (mean / std of 0-255 pixels)')
        with open(out_config, 'w') as f:
            json.dump(record, f, indent=2, default=repr)
        return out_config

    def stock_call(self, out: str, out_config: str) -> str:
        return stock_command(out_config)
