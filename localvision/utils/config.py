"""Loading a config the way the command-line tools do."""
from __future__ import annotations

import os.path as osp
from typing import Optional

from mmengine.config import Config

from localvision.errors import InputError, MissingDataError

from .device import resolve_dist_cfg, share_gpus_in_mmengine_logger


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read ``path``, apply ``--cfg-options``, set the launcher, the work dir (default
    ``./work_dirs/<config name>``) and the distributed backend (``'auto'``: nccl/gloo)."""
    if not osp.isfile(path):
        raise MissingDataError(f'config file {path} does not exist')
    share_gpus_in_mmengine_logger()  # before the registry lookups below log anything
    try:
        cfg = Config.fromfile(path)  # imports the config's custom_imports (localvision.cls / seg / det)
    except ImportError as e:
        name = _missing_module(e)
        if name not in TASK_PACKAGES:
            raise
        raise InputError(f'{path} needs {name}, which this environment lacks: {TASK_PACKAGES[name]}') from None
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


def check_param_schedulers(cfg: Config) -> None:
    """Build ``cfg.param_scheduler`` on a stand-in optimizer, as the Runner will when training
    starts, so that a bad scheduler (an unknown type, ``end <= begin``, a wrong argument) is one
    :class:`InputError` before anything is built. Configs whose optimizer cannot stand alone (several
    optimizers, a custom constructor) are left to the Runner."""
    import torch
    from mmengine.registry import OPTIMIZERS, PARAM_SCHEDULERS

    schedulers = cfg.get('param_scheduler')
    wrapper = cfg.get('optim_wrapper') or {}
    optim = wrapper.get('optimizer')
    if not schedulers or not isinstance(optim, dict) or wrapper.get('constructor'):
        return
    scope = cfg.get('default_scope') or 'mmengine'
    train_cfg = cfg.get('train_cfg') or {}
    with OPTIMIZERS.switch_scope_and_registry(scope) as registry:
        try:
            optimizer = registry.build(dict(optim, params=[torch.nn.Parameter(torch.zeros(1))]))
        except Exception:  # noqa: BLE001  (the Runner says what is wrong with the optimizer itself)
            return
    items = schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]
    with PARAM_SCHEDULERS.switch_scope_and_registry(scope) as registry:
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            item = dict(item)
            if 'end' not in item:  # the Runner's default: the length of training
                end = train_cfg.get('max_epochs') if item.get('by_epoch', True) else train_cfg.get('max_iters')
                if end is not None:
                    item['end'] = end
            try:
                registry.build(item, default_args=dict(optimizer=optimizer, epoch_length=1))
            except (KeyError, ValueError, TypeError, AssertionError) as e:
                msg = e.args[0] if isinstance(e, KeyError) and e.args else e
                raise InputError(f"param_scheduler[{i}] ({item.get('type')}): {msg}; fix it in the config "
                                 f'or with --cfg-options param_scheduler.{i}.KEY=VALUE') from None


def model_config(cfg: Config):
    """A copy of ``cfg.model`` with the top-level ``data_preprocessor`` merged in, as mmengine's
    Runner does before it builds the model (mmpretrain's configs keep it there, with the
    ``num_classes`` that Mixup / CutMix need)."""
    m = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        m.setdefault('data_preprocessor', cfg.data_preprocessor)
    return m


# what a config's task needs beyond localvision's core, and how to get it
TASK_PACKAGES = {
    'mmpretrain': "classification: pip install -e '.[cls]' and mmcv's Python part (pip install mmcv-lite==2.1.0, "
                  'or the full mmcv of an mmseg/mmdet environment), or run tools/setup_env.sh',
    'mmcv': 'pip install mmcv-lite==2.1.0 for classification; segmentation and detection need mmcv with its '
            'compiled ops (tools/setup_env.sh builds it)',
    'mmseg': "segmentation: pip install -e '.[seg]' (mmcv with compiled ops: tools/setup_env.sh builds it)",
    'mmdet': "detection: pip install -e '.[det]' (mmcv with compiled ops: tools/setup_env.sh builds it)",
}


def _missing_module(e: BaseException) -> str:
    """The top-level package whose absence caused ``e`` (mmengine wraps it in 'Failed to import')."""
    while e is not None:
        if isinstance(e, ModuleNotFoundError) and e.name:
            return e.name.split('.')[0]
        e = e.__cause__ or e.__context__
    return ''


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
    return local_model_class(cfg) is not None


def local_model_class(cfg: Config) -> Optional[type]:
    """The localvision task model class ``cfg.model`` builds (looked up in the config's scope), or
    ``None`` where it builds something else."""
    from mmengine.registry import MODELS

    from localvision.models.local_model import LocalLearningModel
    model_type = (cfg.get('model') or {}).get('type')
    if isinstance(model_type, str):
        with MODELS.switch_scope_and_registry(cfg.get('default_scope', 'localvision')) as registry:
            model_type = registry.get(model_type)
    return model_type if isinstance(model_type, type) and issubclass(model_type, LocalLearningModel) else None
