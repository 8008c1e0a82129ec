"""Per-module data parallelism of every local task model (found in the registries): 2 gloo processes.

Each rank trains on its half of a global batch with :class:`LocalDistributedDataParallel`; both
ranks must end with the same parameters, equal to one process that averages the gradients of the
two halves (gradient accumulation over the same halves: BatchNorm statistics stay per half, as on
the ranks). Each rank's peak training memory (second iteration: the optimizer state exists) must be
that of single-process local training on its half batch, not that of end-to-end training. The
executor steps each module after its backward, so a module's gradients are freed before the next
runs: at these tiny sizes weights and gradients outweigh activations, and only then does the
local saving show.
"""
import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.optim import OptimWrapper

from local_models import build, free_port, local_model_classes, tiny
from localvision.engine import LocalDistributedDataParallel
from localvision.utils.memory import PeakMemory

NAMES = sorted(local_model_classes())
K = 3
EXECUTOR = dict(type='PerModuleBackward', step_each_module=True)
pytestmark = pytest.mark.slow


def shard(batch: dict, rank: int, world: int) -> dict:
    return {key: value[rank::world] for key, value in batch.items()}


def one_step_peak(model, data: dict, ow: OptimWrapper, step) -> int:
    with PeakMemory('cpu', baseline=[model, ow.optimizer, data]) as peak:
        step(data, ow)
    return peak.peak_bytes


def _worker(rank: int, world: int, port: int, name: str, out: str, overrides: dict = None) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = build(name, K, executor=EXECUTOR, **(overrides or {}))
    if rank == 1:  # a different start on rank 1: the wrapper must broadcast rank 0's weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)
    model.train()
    wrapped = LocalDistributedDataParallel(model)
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    torch.manual_seed(1)  # the same random stream per half as the reference (RoI sampling)
    wrapped.train_step(shard(tiny(name).batch(4), rank, world), ow)
    torch.manual_seed(2)
    peak = one_step_peak(model, shard(tiny(name).batch(4, seed=1), rank, world), ow, wrapped.train_step)
    torch.save(dict(params={n: p.detach() for n, p in model.named_parameters()}, peak=peak), f'{out}.{rank}')
    dist.destroy_process_group()


@pytest.mark.parametrize('name', NAMES)
def test_two_ranks_match_one_process_and_keep_local_memory(tmp_path, name):
    out = str(tmp_path / 'rank')
    mp.spawn(_worker, args=(2, free_port(), name, out), nprocs=2, join=True)
    ranks = [torch.load(f'{out}.{r}') for r in range(2)]
    batch = tiny(name).batch(4)
    ref = build(name, K)
    ref.train()
    ow = OptimWrapper(torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), accumulative_counts=2)
    for it, (seed, b) in enumerate(((1, batch), (2, tiny(name).batch(4, seed=1)))):
        for r in range(2):  # the mean of the two halves' gradients, one step per iteration
            torch.manual_seed(seed)
            ref.train_step(copy.deepcopy(shard(b, r, 2)), ow)
    initial, changed = build(name, K).state_dict(), 0
    for n, p in ref.named_parameters():
        torch.testing.assert_close(ranks[0]['params'][n], ranks[1]['params'][n], rtol=0, atol=0, msg=n)
        torch.testing.assert_close(ranks[0]['params'][n], p.detach(), rtol=1e-4, atol=1e-5, msg=n)
        changed += int(not torch.equal(p.detach(), initial[n]))
    assert changed > 0
    # memory: a rank holds what single-process local training holds on its half batch
    half = shard(tiny(name).batch(4, seed=1), 0, 2)
    peaks = {}
    for key, executor in (('local', EXECUTOR), ('e2e', dict(type='JointBackward'))):
        model = build(name, K, executor=executor)
        model.train()
        ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
        model.train_step(copy.deepcopy(shard(batch, 0, 2)), ow)
        peaks[key] = one_step_peak(model, copy.deepcopy(half), ow, model.train_step)
    for r in range(2):  # within 10 % of local training, and below end-to-end training
        assert ranks[r]['peak'] <= 1.1 * peaks['local'] and ranks[r]['peak'] < peaks['e2e'], (r, ranks[r]['peak'], peaks)


def test_channels_last_ranks_match_one_contiguous_process(tmp_path):
    """``backbone.channels_last``: the bucketed all-reduce hands channels-last weights contiguous
    gradients; the ranks still equal one contiguous process averaging the two halves."""
    name = 'LocalImageClassifier'
    out = str(tmp_path / 'rank')
    mp.spawn(_worker, args=(2, free_port(), name, out, {'backbone.channels_last': True}), nprocs=2, join=True)
    ranks = [torch.load(f'{out}.{r}') for r in range(2)]
    ref = build(name, K)
    ref.train()
    ow = OptimWrapper(torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), accumulative_counts=2)
    for seed, b in ((1, tiny(name).batch(4)), (2, tiny(name).batch(4, seed=1))):
        for r in range(2):
            torch.manual_seed(seed)
            ref.train_step(copy.deepcopy(shard(b, r, 2)), ow)
    for n, p in ref.named_parameters():
        torch.testing.assert_close(ranks[0]['params'][n], ranks[1]['params'][n], rtol=0, atol=0, msg=n)
        torch.testing.assert_close(ranks[0]['params'][n], p.detach(), rtol=1e-4, atol=1e-5, msg=n)
