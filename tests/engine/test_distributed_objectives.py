"""Data parallelism of the objectives built on later blocks (found in the registry: AugLocal, MAN,
HPFF), 2 gloo processes: both ranks end with the same weights, equal to one process averaging the
gradients of the two halves. HPFF's cascade sends gradients into module k+1 from unit k: the
per-unit all-reduce of module k+1 must wait for its own unit, or these would differ."""
import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.optim import OptimWrapper

from local_models import build, free_port, tiny
from localvision.engine import LocalDistributedDataParallel
from localvision.registry import OBJECTIVES

pytestmark = pytest.mark.slow
NAME, K = 'LocalImageClassifier', 3


def later_block_objectives():
    import localvision.models  # noqa: F401  (fills the registry)
    return sorted(n for n, c in OBJECTIVES.module_dict.items() if getattr(c, 'takes_blocks', False))


def objective_cfg(name: str) -> dict:
    # MAN with momentum 0: its EMA copy equals the live block at every forward, so the reference
    # (two half-batch forwards per iteration, two EMA updates) sees what the ranks see
    return dict(type=name, momentum=0.0) if name == 'MAN' else dict(type=name)


def shard(batch: dict, rank: int, world: int) -> dict:
    return {key: value[rank::world] for key, value in batch.items()}


def _worker(rank: int, world: int, port: int, objective: str, out: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(NAME, K, local_objective=objective_cfg(objective)).train()
    wrapped = LocalDistributedDataParallel(model)
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    for seed in (0, 1):
        wrapped.train_step(shard(tiny(NAME).batch(4, seed=seed), rank, world), ow)
    torch.save({n: p.detach() for n, p in model.named_parameters()}, f'{out}.{rank}')
    dist.destroy_process_group()


@pytest.mark.parametrize('objective', later_block_objectives())
def test_two_ranks_match_one_process(tmp_path, objective):
    assert {'AugLocal', 'MAN', 'HPFF'} <= set(later_block_objectives())
    out = str(tmp_path / 'rank')
    mp.spawn(_worker, args=(2, free_port(), objective, out), nprocs=2, join=True)
    ranks = [torch.load(f'{out}.{r}') for r in range(2)]
    torch.manual_seed(0)
    ref = build(NAME, K, local_objective=objective_cfg(objective)).train()
    initial = copy.deepcopy(ref.state_dict())
    ow = OptimWrapper(torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), accumulative_counts=2)
    for seed in (0, 1):
        for r in range(2):
            ref.train_step(copy.deepcopy(shard(tiny(NAME).batch(4, seed=seed), r, 2)), ow)
    changed = 0
    for n, p in ref.named_parameters():
        torch.testing.assert_close(ranks[0][n], ranks[1][n], rtol=0, atol=0, msg=n)
        torch.testing.assert_close(ranks[0][n], p.detach(), rtol=1e-4, atol=1e-5, msg=n)
        changed += int(not torch.equal(p.detach(), initial[n]))
    assert changed > 0
