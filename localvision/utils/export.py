"""What every task's export to stock timm / OpenMMLab shares: the checkpoint file, the stock
config, and the check that stock timm can build the backbone."""
from __future__ import annotations

import copy
from typing import Dict, Optional, Tuple

import torch
from mmengine.config import Config

from localvision.errors import InputError


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
