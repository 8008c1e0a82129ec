"""Export of a trained local-learning model to stock timm / OpenMMLab: one procedure for every
task (:func:`export`), and what every task's adapter (:class:`StockExport`) shares: the checkpoint
file, the stock config, the renaming of the timm backbone's weights, and the check that stock timm
can build the backbone.

A task model names its adapter in ``stock_export`` (``LocalImageClassifier``: timm,
``LocalEncoderDecoder``: mmseg, the detectors: mmdet); :func:`export` finds it from the config's
model type in the registries, so a new task model exports as soon as it names one.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

from localvision.errors import InputError

TIMM_PREFIX = 'backbone.model.'  # the trained timm model inside the task model's backbone
DROPPED_PREFIXES = ('objectives.', 'data_preprocessor.')  # auxiliary nets; the preprocessor has no weights


class StockExport(ABC):
    """What one task's export supplies; :func:`export` runs the steps every task shares.

    Attributes:
        library: the stock library the model is exported to (``'timm'``, ``'mmseg'``, ``'mmdet'``).
        api: the stock call that loads an exported config and checkpoint (OpenMMLab tasks).
    """

    library = ''
    api = ''

    @abstractmethod
    def stock_model(self, cfg: Config, model: nn.Module) -> Any:
        """The stock model of the same network (a config dict, or timm's arguments); raises
        :class:`InputError` for what stock ``library`` cannot express. Runs before loading."""

    @abstractmethod
    def state_dict(self, model: nn.Module) -> Dict[str, torch.Tensor]:
        """The trained weights under the stock model's names; auxiliary nets dropped."""

    def stock_cfg(self, stock: Config, model: nn.Module, meta: dict) -> None:
        """Task edits of the stock config (``stock_config``'s result) before it is written."""

    def write_config(self, cfg: Config, model: nn.Module, stock_model: Any, meta: dict, out: str,
                     out_config: Optional[str]) -> str:
        """Write the stock config next to ``out``; returns its path."""
        stock, out_config = stock_config(cfg, stock_model, out, out_config)
        self.stock_cfg(stock, model, meta)
        stock.dump(out_config)
        return out_config

    def stock_call(self, out: str, out_config: str) -> str:
        """The stock call that loads the export, e.g. ``mmseg.apis.init_model(...)``."""
        return f'{self.api}({out_config!r}, {out!r})'


def check_no_context(model: nn.Module, state: Dict[str, Any], library: str) -> None:
    """Refuse a model with a context supply (in the config or in the checkpoint's keys): its
    context path feeds every module after the first at inference too, which no stock model has."""
    if getattr(model, 'context', None) is not None or any(k.startswith('context.') for k in state):
        raise InputError(f'the model has a context supply (model.context, ContSup): its context path feeds every '
                         f'module after the first at inference too, which a stock {library} model has no place for, '
                         f'so it cannot be exported to {library}; export a model trained without model.context, or '
                         'evaluate this one with tools/test.py')


def stock_state_dict(model: nn.Module, backbone_key: Callable[[str], Optional[str]]) -> Dict[str, torch.Tensor]:
    """``model``'s weights with the auxiliary nets dropped and the timm backbone's renamed:
    ``backbone_key(timm key)`` is the stock key (``None``: not in the stock model); other keys stay."""
    out: Dict[str, torch.Tensor] = OrderedDict()
    for k, v in model.state_dict().items():
        if k.startswith(DROPPED_PREFIXES):
            continue
        if k.startswith(TIMM_PREFIX):
            k = backbone_key(k[len(TIMM_PREFIX):])
            if k is None:
                continue
        out[k] = v.detach().clone()
    return out


def export(cfg: Config, checkpoint: str, out: str, out_config: Optional[str] = None) -> Tuple[str, str, str]:
    """Build the task model of ``cfg``, load ``checkpoint``, write the stock checkpoint ``out`` and
    its config (default: next to ``out``). Returns ``(out, out_config, the stock call)``."""
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_state_dict

    from localvision.utils.checkpoint import check_fits, read_state_dict
    from localvision.utils.config import local_model_class
    name = (cfg.get('model') or {}).get('type')
    model_cls = local_model_class(cfg)
    exporter = getattr(model_cls, 'stock_export', None)
    if exporter is None:
        raise InputError(f'model.type={name!r} (default_scope={cfg.get("default_scope")!r}) is not a localvision task '
                         'model with an export to a stock library')
    exporter = exporter()
    scope = cfg.get('default_scope', 'localvision')
    init_default_scope(scope)
    with MODELS.switch_scope_and_registry(scope) as registry:
        model = registry.build(cfg.model)
    ckpt, state = read_state_dict(checkpoint)
    check_no_context(model, state, exporter.library)
    stock_model = exporter.stock_model(cfg, model)  # refuses what stock cannot express
    check_fits(model, state, checkpoint)
    load_state_dict(model, state, strict=False)  # the auxiliary nets may be absent: they are not exported
    meta = save_stock_checkpoint(exporter.state_dict(model), ckpt, out)
    out_config = exporter.write_config(cfg, model, stock_model, meta, out, out_config)
    return out, out_config, exporter.stock_call(out, out_config)


def check_stock_timm_model(model_name: str, library: str) -> None:
    """Refuse backbones that only exist in timm through localvision (the CIFAR ResNets): stock
    ``library`` builds the backbone with timm alone."""
    from timm.models import is_model
    from timm.models._registry import _model_entrypoints
    entry = _model_entrypoints.get(model_name) if is_model(model_name) else None
    if entry is not None and not entry.__module__.startswith('timm.'):
        raise InputError(f'backbone {model_name} is registered in timm by {entry.__module__}, so stock {library} '
                         '(without localvision) cannot build it; export models with a timm backbone '
                         '(e.g. resnet50d, convnext_tiny)')


def save_stock_checkpoint(state: Dict[str, torch.Tensor], ckpt, out: str) -> dict:
    """Write ``state`` with the trained checkpoint's meta (marked as exported); returns the meta."""
    meta = dict(ckpt.get('meta', {})) if isinstance(ckpt, dict) else {}
    meta['exported_by'] = 'localvision tools/export_checkpoint.py'
    torch.save(dict(state_dict=state, meta=meta), out)
    return meta


def stock_config(cfg: Config, stock_model: dict, out: str, out_config: Optional[str]) -> Tuple[Config, str]:
    """``cfg`` with the stock ``model`` and nothing that needs localvision; and its file name
    (``<out>_config.py`` unless given)."""
    stock = Config(copy.deepcopy(cfg._cfg_dict.to_dict()))
    stock.model = stock_model
    stock.pop('custom_imports', None)
    stock.pop('model_wrapper_cfg', None)  # LocalDistributedDataParallel
    return stock, out_config or out.rsplit('.', 1)[0] + '_config.py'


def _stock_source_key(k: str, ours: Dict[str, torch.Tensor]) -> Optional[str]:
    """The trained timm model's key of ``k``, a key of timm's ``features_only`` extractor: the same
    name, the model wrapped as ``model.*``, or a flattened container (``stages_0.*`` = ``stages.0.*``)."""
    cands = [k]
    if k.startswith('model.'):
        cands.append(k[len('model.'):])
    head, _, rest = k.partition('.')
    cands += [f'{head[:i]}.{head[i + 1:]}.{rest}' for i, c in enumerate(head) if c == '_']
    return next((c for c in cands if c in ours), None)


def _stock_features(model, extra: dict, why: str):
    """timm's ``features_only`` extractor of the backbone (``extra``: more ``create_model``
    arguments) with the trained weights, and ``{trained key: extractor key}``."""
    import timm
    kwargs = {k: v for k, v in model.backbone.timm_kwargs.items() if k != 'num_classes'}
    try:
        stock = timm.create_model(model.backbone.model_name, features_only=True, pretrained=False, **kwargs, **extra)
    except Exception as e:  # noqa: BLE001  (timm's own refusal, in one line)
        raise InputError(f'{why}: timm cannot build it with features_only=True ({type(e).__name__}: '
                         f'{str(e).splitlines()[0][:200]})') from None
    ours = model.backbone.model.state_dict()
    keys: Dict[str, str] = {}
    for k, v in stock.state_dict().items():
        src = _stock_source_key(k, ours)
        if src is None or ours[src].shape != v.shape:
            raise InputError(f"{why}: timm's features_only model has {k!r}, which the trained model "
                             f'{"lacks" if src is None else "holds with another shape"}')
        keys[src] = k
    stock.load_state_dict({k: ours[src] for src, k in keys.items()}, strict=True)
    return stock.eval(), keys


def _same(f: torch.Tensor, level: torch.Tensor) -> bool:
    return f.shape == level.shape and torch.allclose(f, level, rtol=1e-4, atol=1e-5)


def timm_features_backbone(model, library: str) -> Tuple[dict, Dict[str, str]]:
    """Settings of the stock ``TIMMBackbone(features_only=True)`` (mmseg's; mmpretrain's for mmdet)
    that computes the task model's levels: ``out_indices``, and ``feature_cls`` where timm's default
    extractor does not give them; and ``{trained timm key: key in the extractor}``. Found and
    checked on a random input, not assumed.

    timm builds the feature extractor of each family its own way (modules kept under their names,
    containers flattened, or the model wrapped and run through ``forward_intermediates``, which
    also gives NCHW maps of channels-last models); each level must be one of the extractor's
    outputs with the trained weights.
    """
    name = model.backbone.model_name
    check_stock_timm_model(name, library)
    why = f'{name} cannot be exported to stock {library}'
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(2, *model.backbone.input_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            levels = model.extract_levels(x)[1]
            refusals = []  # (levels matched, refusal): the extractor that came closest is named
            for extra in ({}, dict(feature_cls='getter')):
                try:
                    stock, _ = _stock_features(model, extra, why)
                    feats = stock(x)
                except InputError as e:
                    refusals.append((-1, e))
                    continue
                index = list(stock.feature_info.out_indices)
                out = [next((index[i] for i, f in enumerate(feats) if _same(f, lv)), None) for lv in levels]
                if None not in out:
                    extra = dict(extra, out_indices=tuple(out))
                    stock, keys = _stock_features(model, extra, why)
                    if all(_same(f, lv) for f, lv in zip(stock(x), levels)):
                        return extra, keys
                    refusals.append((len(out), InputError(f"{why}: timm's features_only model with {extra} "
                                                          'does not give the levels')))
                    continue
                j = out.index(None)
                block = model.backbone.seq.infos[model.backbone.level_blocks[j]].name
                shaped = any(f.shape == levels[j].shape for f in feats)
                refusals.append((sum(o is not None for o in out), InputError(
                    f'{why}: level {j} (after {block}, {tuple(levels[j].shape[1:])}) is none of the outputs of '
                    f"timm's features_only model ({[tuple(f.shape[1:]) for f in feats]}"
                    f"{'; an output of its shape holds other values, e.g. without the final norm' if shaped else ''}"
                    '); stock TIMMBackbone gives the ends of timm feature stages only')))
            raise max(refusals, key=lambda r: r[0])[1]
    finally:
        model.train(was_training)
