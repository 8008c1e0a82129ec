"""Loading a config the way the command-line tools do."""
from __future__ import annotations

import os.path as osp
from typing import Optional

from mmengine.config import Config

from localvision.errors import MissingDataError

from .device import resolve_dist_cfg


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read ``path``, apply ``--cfg-options``, set the launcher, the work dir (default
    ``./work_dirs/<config name>``) and the distributed backend (``'auto'``: nccl/gloo)."""
    if not osp.isfile(path):
        raise MissingDataError(f'config file {path} does not exist')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    resolve_dist_cfg(cfg)
    if cfg.get('model_wrapper_cfg') is None and _is_local_model(cfg):
        cfg.model_wrapper_cfg = dict(type='LocalDistributedDataParallel')
    use_resumable_epoch_loop(cfg)
    return cfg


def use_resumable_epoch_loop(cfg: Config) -> None:
    """mmengine's epoch-based training loop -> :class:`~localvision.engine.LocalEpochBasedTrainLoop`
    (the same loop, which also resumes inside an epoch: an interrupted run continues where it stopped)."""
    train_cfg = cfg.get('train_cfg')
    if not train_cfg:
        return
    kind = train_cfg.get('type')
    if kind in ('EpochBasedTrainLoop', 'mmengine.EpochBasedTrainLoop') or (kind is None and train_cfg.get('by_epoch')):
        train_cfg.pop('by_epoch', None)
        train_cfg['type'] = 'LocalEpochBasedTrainLoop'


def _is_local_model(cfg: Config) -> bool:
    """Whether ``cfg.model`` builds a localvision task model (looked up in the config's scope)."""
    from mmengine.registry import MODELS

    from localvision.models.local_model import LocalLearningModel
    model_type = cfg.get('model', {}).get('type')
    if not isinstance(model_type, str):
        return isinstance(model_type, type) and issubclass(model_type, LocalLearningModel)
    with MODELS.switch_scope_and_registry(cfg.get('default_scope', 'localvision')) as registry:
        cls = registry.get(model_type)
    return isinstance(cls, type) and issubclass(cls, LocalLearningModel)
