"""Data parallelism of split models on CPU: 2 processes, gloo.

One iteration on 2 ranks (each half of a global batch) must leave identical parameters on both
ranks, equal to one process trained on the whole batch (float reduction order aside). The model
has no BatchNorm (a ViT with LayerNorm), whose batch statistics would differ by design.
"""
import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.optim import OptimWrapper

from localvision.engine import LocalDistributedDataParallel
from localvision.cls import LocalImageClassifier
from mmpretrain.structures import DataSample

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`


def tiny_vit(k: int, executor='PerModuleBackward') -> LocalImageClassifier:
    torch.manual_seed(0)
    return LocalImageClassifier(
        backbone=dict(model_name='vit_tiny_patch16_224', img_size=32, patch_size=8, depth=4, embed_dim=48,
                      num_heads=3),
        head=dict(type='LinearClsHead', num_classes=4), split=dict(num_modules=k, strategy='equal', input_size=(3, 32, 32)),
        local_objective=dict(type='Greedy', head=dict(type='PoolLinearHead')),
        executor=dict(type=executor) if isinstance(executor, str) else executor,
        data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3))


def global_batch(n: int = 8) -> dict:
    g = torch.Generator().manual_seed(3)
    return dict(inputs=[torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8) for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % 4) for i in range(n)])


def shard(batch: dict, rank: int, world: int) -> dict:
    return {key: value[rank::world] for key, value in batch.items()}


def _worker(rank: int, world: int, port: int, k: int, executor: str, accum: int, out: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = tiny_vit(k, executor)
    if rank == 1:  # a different start on rank 1: the wrapper must broadcast rank 0's weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    wrapped = LocalDistributedDataParallel(model)
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), accumulative_counts=accum)
    for it in range(accum):
        wrapped.train_step(shard(global_batch(), rank, world) if accum == 1 else
                           shard(shard(global_batch(), it, accum), rank, world), ow)
    torch.save({n: p.detach() for n, p in model.named_parameters()}, f'{out}.{rank}')
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('k,executor,accum', [(3, 'PerModuleBackward', 1), (1, 'PerModuleBackward', 1),
                                              (3, 'JointBackward', 1), (3, 'PerModuleBackward', 2),
                                              (3, dict(type='PerModuleBackward', step_in_backward=True), 1)])
def test_two_ranks_match_one_process_on_the_global_batch(tmp_path, k, executor, accum):
    out = str(tmp_path / 'params')
    mp.spawn(_worker, args=(2, free_port(), k, executor, accum, out), nprocs=2, join=True)
    ranks = [torch.load(f'{out}.{r}') for r in range(2)]
    ref_model = tiny_vit(k, executor)
    ow = OptimWrapper(torch.optim.SGD(ref_model.parameters(), lr=0.5, momentum=0.9), accumulative_counts=accum)
    for it in range(accum):
        ref_model.train_step(global_batch() if accum == 1 else shard(global_batch(), it, accum), ow)
    initial, changed = tiny_vit(k).state_dict(), 0
    for n, p in ref_model.named_parameters():
        torch.testing.assert_close(ranks[0][n], ranks[1][n], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0][n], p.detach(), rtol=1e-4, atol=1e-6)
        changed += int(not torch.equal(p.detach(), initial[n]))
    assert changed > 0


def test_wrapper_refuses_models_that_are_not_local():
    with pytest.raises(TypeError, match='wraps localvision task models'):
        LocalDistributedDataParallel(torch.nn.Linear(2, 2))
