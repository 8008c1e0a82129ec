"""Device choice where ranks share GPUs (localvision/utils/device.py)."""
import os.path as osp
import uuid

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def one_gpu(monkeypatch):
    """torch reports one CUDA device (the check needs only its availability and count); called after
    the imports, so that no library caches the pretended device at import time."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)


@pytest.mark.parametrize('visible,local_rank,device', [(None, '1', 0), (None, '0', 0), ('3,5', '3', 5), ('7', '1', 7)])
def test_mmengine_logger_starts_on_a_rank_that_shares_a_gpu(monkeypatch, visible, local_rank, device):
    """Stage 1 of a K=2 pipeline on one GPU (LOCAL_RANK=1): mmengine's logger named its device
    CUDA_VISIBLE_DEVICES[LOCAL_RANK] and raised IndexError before training (seen on an H200); it
    names the device the rank trains on."""
    from mmengine.logging import MMLogger
    from mmengine.logging import logger as mm_logger

    from localvision.utils.device import share_gpus_in_mmengine_logger
    one_gpu(monkeypatch)
    if visible is not None:
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', visible)
    monkeypatch.setenv('LOCAL_RANK', local_rank)
    share_gpus_in_mmengine_logger()
    share_gpus_in_mmengine_logger()  # idempotent
    assert mm_logger._get_device_id() == device
    assert MMLogger.get_instance(f'lv_shared_gpu_{uuid.uuid4().hex}').name == 'mmengine'


def test_load_config_on_a_rank_that_shares_a_gpu(monkeypatch):
    """What every training process does first (the registry lookups of load_config log through
    mmengine) works on LOCAL_RANK=1 with one GPU."""
    from mmengine.logging import MMLogger

    import localvision.cls  # noqa: F401  (what the config imports, before the pretended GPU)
    from localvision.utils.config import load_config
    one_gpu(monkeypatch)
    monkeypatch.setenv('LOCAL_RANK', '1')
    monkeypatch.setattr(MMLogger, '_instance_dict', type(MMLogger._instance_dict)())  # no logger yet
    cfg = load_config(osp.join(ROOT, 'configs/cls/cifar_resnet32_shapes_greedy_k4.py'), launcher='pytorch')
    assert cfg.model_wrapper_cfg['type'] == 'LocalDistributedDataParallel'
    assert MMLogger.get_current_instance().name == 'mmengine'


@pytest.mark.parametrize('launcher,local_rank,fits', [('pytorch', '0', True), ('pytorch', '1', False),
                                                       ('none', '1', True), ('slurm', '1', True)])
def test_data_parallel_processes_must_fit_the_gpus(monkeypatch, launcher, local_rank, fits):
    """Data-parallel training with more torchrun processes than GPUs: one error line naming the
    count to launch (mmengine would fail in torch.cuda.set_device with 'invalid device ordinal');
    slurm's mmengine start takes the GPUs modulo their number."""
    from localvision.errors import InputError
    from localvision.utils.device import check_processes_fit_gpus
    one_gpu(monkeypatch)
    monkeypatch.setenv('LOCAL_RANK', local_rank)
    if fits:
        check_processes_fit_gpus(launcher)
    else:
        with pytest.raises(InputError, match=r'one process per GPU: .*LOCAL_RANK 1, this machine 1 GPU\(s\); '
                                             r'launch tools/dist_train.sh CONFIG 1'):
            check_processes_fit_gpus(launcher)


def test_data_parallel_check_is_silent_without_cuda(monkeypatch):
    from localvision.utils.device import check_processes_fit_gpus
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setenv('LOCAL_RANK', '3')
    check_processes_fit_gpus('pytorch')


@pytest.mark.parametrize('processes,backend', [('1', 'nccl'), ('2', 'gloo')])
def test_auto_backend_is_gloo_where_processes_share_a_gpu(monkeypatch, processes, backend):
    """``'auto'`` (the configs' backend): nccl where each process of this machine has a GPU; gloo
    where module-parallel stages outnumber the GPUs (nccl cannot put two ranks on one GPU)."""
    from mmengine.config import Config

    from localvision.utils.device import default_dist_backend, resolve_dist_cfg
    one_gpu(monkeypatch)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', processes)
    assert default_dist_backend() == backend
    cfg = Config(dict(launcher='pytorch', pipeline=dict(schedule='sync'), env_cfg=dict(dist_cfg=dict(backend='auto'))))
    resolve_dist_cfg(cfg)
    assert cfg.env_cfg.dist_cfg.backend == backend


def test_nccl_is_refused_where_stages_share_a_gpu(monkeypatch):
    """An explicit nccl with more stage processes than GPUs: one error line naming the fix, from the
    config check and from the pipeline's process-group start (nccl would fail at the first transfer);
    a data-parallel config is left to :func:`check_processes_fit_gpus`."""
    from mmengine.config import Config
    import torch.distributed as dist

    from localvision.engine.pipeline.launch import init_pipeline_dist
    from localvision.errors import InputError
    from localvision.utils.device import resolve_dist_cfg
    one_gpu(monkeypatch)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
    message = (r"backend='nccl' needs a GPU for each process: 2 stage processes run on this machine, which has "
               r"1 GPU\(s\); use 'gloo' or 'auto'")
    pipeline_cfg = dict(launcher='pytorch', pipeline=dict(schedule='sync'), env_cfg=dict(dist_cfg=dict(backend='nccl')))
    with pytest.raises(InputError, match=message):
        resolve_dist_cfg(Config(pipeline_cfg))
    assert not dist.is_initialized()
    with pytest.raises(InputError, match=message):
        init_pipeline_dist(Config(pipeline_cfg))
    assert not dist.is_initialized()
    data_parallel = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    resolve_dist_cfg(data_parallel)
    assert data_parallel.env_cfg.dist_cfg.backend == 'nccl'
