"""What every task's export to stock OpenMMLab shares: the checkpoint file and the stock config."""
from __future__ import annotations

import copy
from typing import Dict, Optional, Tuple

import torch
from mmengine.config import Config


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
