"""Device and distributed-backend choice: CUDA when present, CPU otherwise."""
from __future__ import annotations

from localvision.errors import InputError

import torch


def default_device() -> str:
    """``'cuda'`` when a CUDA device is usable, else ``'cpu'``."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def local_processes() -> int:
    """How many processes of the job run on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 without it)."""
    import os
    return int(os.environ.get('LOCAL_WORLD_SIZE', '1'))


def default_dist_backend() -> str:
    """``'nccl'`` with CUDA and a GPU for each process on this machine; ``'gloo'`` without CUDA, or
    where processes share GPUs (module-parallel stages outnumbering the GPUs), which nccl refuses."""
    if torch.cuda.is_available() and local_processes() <= torch.cuda.device_count():
        return 'nccl'
    return 'gloo'


def resolve_dist_cfg(cfg) -> None:
    """Fill ``cfg.env_cfg.dist_cfg.backend`` when it is missing or ``'auto'``, and check it when
    the run will create a process group (``cfg.launcher`` other than ``'none'``): a single-process
    run never uses the backend, so mmseg's default ``'nccl'`` is fine on CPU there."""
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend') in (None, 'auto'):
        dist_cfg['backend'] = default_dist_backend()
    elif cfg.get('launcher', 'none') != 'none':
        check_dist_backend(dist_cfg['backend'], shares_gpus=cfg.get('pipeline') is not None)


def check_dist_backend(backend: str, shares_gpus: bool = False) -> None:
    """Raise :class:`InputError` when ``backend`` cannot start a process group on this machine.

    ``shares_gpus``: the processes may share GPUs (module-parallel stages); nccl cannot put two
    ranks on one GPU, so it needs as many GPUs as there are processes on this machine.
    (Data-parallel training needs a GPU per process whatever the backend:
    :func:`check_processes_fit_gpus`.)
    """
    if backend == 'nccl' and not torch.cuda.is_available():
        raise InputError("env_cfg.dist_cfg.backend='nccl' needs CUDA; none is available here "
                         "(use 'gloo' or 'auto')")
    if backend == 'nccl' and shares_gpus and local_processes() > torch.cuda.device_count():
        raise InputError(f"env_cfg.dist_cfg.backend='nccl' needs a GPU for each process: {local_processes()} "
                         f"stage processes run on this machine, which has {torch.cuda.device_count()} GPU(s); "
                         "use 'gloo' or 'auto' (the stages then share the GPUs, tensors cross the cuts "
                         "through the CPU) or launch on as many GPUs as stages")


def share_gpus_in_mmengine_logger() -> None:
    """Let mmengine's logger start in a process that shares its GPU with other ranks.

    mmengine 0.10.7's ``MMLogger`` names its device ``CUDA_VISIBLE_DEVICES[LOCAL_RANK]`` (for the
    log file of each rank) and raises ``IndexError: list index out of range`` where there are more
    ranks on the machine than GPUs, as with module-parallel stages sharing a GPU (K=2 on one GPU).
    The rank's device is then the one it trains on: ``LOCAL_RANK`` modulo the visible devices.
    Idempotent; call it before anything logs through mmengine (``load_config`` does).
    """
    import os

    from mmengine.logging import logger as mm_logger
    original = getattr(mm_logger, '_get_device_id', None)
    if original is None or getattr(original, 'shares_gpus', False):
        return

    def device_id():
        try:
            return original()
        except IndexError:
            visible = os.environ.get('CUDA_VISIBLE_DEVICES')
            devices = visible.split(',') if visible is not None else [str(i) for i in range(torch.cuda.device_count())]
            device = devices[int(os.environ.get('LOCAL_RANK', '0')) % max(len(devices), 1)] if devices else '0'
            return int(device) if device.strip().isdigit() else device

    device_id.shares_gpus = True
    mm_logger._get_device_id = device_id


def check_processes_fit_gpus(launcher: str) -> None:
    """Raise :class:`InputError` where torchrun started more processes on this machine than it has
    GPUs for data-parallel training: mmengine gives the process of ``LOCAL_RANK`` r GPU r (a raw
    'invalid device ordinal' otherwise). Module-parallel runs (a ``pipeline`` section) share GPUs
    and do not come here."""
    import os
    if launcher != 'pytorch' or not torch.cuda.is_available():
        return
    local_rank, gpus = int(os.environ.get('LOCAL_RANK', '0')), torch.cuda.device_count()
    if local_rank >= gpus:
        raise InputError(f'data-parallel training runs one process per GPU: this process has LOCAL_RANK '
                         f'{local_rank}, this machine {gpus} GPU(s); launch tools/dist_train.sh CONFIG {gpus} '
                         f'(or set CUDA_VISIBLE_DEVICES)')


def init_dist_without_cuda(launcher: str, backend: str = 'gloo') -> None:
    """Start the process group on a machine without CUDA.

    mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device`` for the pytorch and slurm
    launchers, which fails without a GPU; the Runner skips its own ``init_dist`` when a group
    already exists, so the tools call this first on CPU-only machines.
    """
    import os
    import subprocess

    import torch.distributed as dist
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    check_dist_backend(backend)
    if launcher == 'slurm':
        os.environ.setdefault('MASTER_PORT', os.environ.get('PORT', '29500'))
        if 'MASTER_ADDR' not in os.environ:
            nodes = subprocess.getoutput(f"scontrol show hostname {os.environ['SLURM_NODELIST']} | head -n1")
            os.environ['MASTER_ADDR'] = nodes.strip()
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    elif launcher != 'pytorch':
        raise InputError(f"--launcher {launcher} needs CUDA here; on CPU use 'pytorch' (torchrun) or 'slurm'")
    dist.init_process_group(backend=backend)


def finish_dist() -> None:
    """End a successful distributed run: wait for every rank, then destroy the process group.

    Leaving the group to interpreter teardown lets the gloo backend's threads be torn down while
    a peer is still closing its connections, which can abort a finished run ("terminate called
    without an active exception"). Call only on success: a barrier with a dead peer would block.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
