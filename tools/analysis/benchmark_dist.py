"""Data-parallel time per iteration: E2E vs local learning, side by side, on N processes.

    python tools/analysis/benchmark_dist.py CONFIG [--nproc 2] [--ks 1 4] [--batch-size 64]
        [--iters 10] [--input-size 3 32 32] [--out-dir DIR] [--cfg-options k=v ...]

Spawns ``--nproc`` processes (gloo on CPU, nccl on CUDA), wraps every variant in
:class:`~localvision.engine.LocalDistributedDataParallel`, and times interleaved rounds of one
iteration per variant (the global batch is split over the ranks). Prints a table and writes
``benchmark_dist.json`` / ``benchmark_dist.png``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import os.path as osp
import socket
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402

from benchmark_memory import synthetic_cls_batch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--nproc', type=int, default=2)
    p.add_argument('--ks', type=int, nargs='+', default=[1, 4])
    p.add_argument('--batch-size', type=int, default=64, help='global batch (split over the ranks)')
    p.add_argument('--input-size', type=int, nargs=3, default=None, metavar=('C', 'H', 'W'))
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--threads', type=int, default=1, help='torch threads per process on CPU')
    p.add_argument('--out-dir', default=None)
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def _worker(rank: int, args, port: int, out_file: str) -> None:
    from localvision.engine import LocalDistributedDataParallel
    from localvision.utils.config import model_config
    from localvision.utils.setup_env import register_all_modules
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group('nccl' if cuda else 'gloo', rank=rank, world_size=args.nproc)
    torch.set_num_threads(args.threads)
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(args.config)  # imports its custom_imports (localvision.cls)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    input_size = args.input_size or cfg.model.split.input_size
    cfg.model.split['input_size'] = tuple(input_size)
    device = torch.device('cuda') if cuda else torch.device('cpu')
    per_rank = args.batch_size // args.nproc
    batch = synthetic_cls_batch(args.batch_size, input_size, cfg.model.head.num_classes)
    batch = {k: v[rank * per_rank:(rank + 1) * per_rank] for k, v in batch.items()}
    variants = []
    for k in args.ks:
        c = copy.deepcopy(model_config(cfg))
        c.split.update(cuts=None, num_modules=k, strategy=c.split.get('strategy', 'balanced'))
        torch.manual_seed(0)
        model = MODELS.build(c).to(device).train()
        wrapped = LocalDistributedDataParallel(model)
        ow = build_optim_wrapper(model, cfg.optim_wrapper)
        wrapped.train_step(copy.deepcopy(batch), ow)  # warm-up
        variants.append(('E2E' if k == 1 else f'K={k}', k, wrapped, ow, []))
    for _ in range(args.iters):
        for name, k, wrapped, ow, times in variants:
            dist.barrier()
            t0 = time.perf_counter()
            wrapped.train_step(copy.deepcopy(batch), ow)
            if cuda:
                torch.cuda.synchronize()
            dist.barrier()
            times.append(time.perf_counter() - t0)
    if rank == 0:
        with open(out_file, 'w') as f:
            json.dump([dict(name=n, k=k, times=t) for n, k, _, _, t in variants], f)
    dist.destroy_process_group()


def run(argv=None):
    args = parse_args(argv)
    out_dir = args.out_dir or osp.join('work_dirs', 'benchmarks',
                                       osp.splitext(osp.basename(args.config))[0] + f'_dist{args.nproc}')
    os.makedirs(out_dir, exist_ok=True)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    raw = osp.join(out_dir, 'raw_times.json')
    mp.spawn(_worker, args=(args, port, raw), nprocs=args.nproc, join=True)
    results = json.load(open(raw))
    base = statistics.median(results[0]['times'])
    for r in results:
        r['sec_per_iter'] = statistics.median(r['times'])
        r['time_ratio'] = r['sec_per_iter'] / base
    meta = dict(config=args.config, nproc=args.nproc, global_batch=args.batch_size, iters=args.iters,
                threads_per_process=args.threads, backend='nccl' if torch.cuda.is_available() else 'gloo')
    print(f"\n{args.config}: {args.nproc} processes ({meta['backend']}), global batch {args.batch_size}")
    print(f"{'variant':<10}{'s/iter':>10}{'vs E2E':>9}")
    for r in results:
        print(f"{r['name']:<10}{r['sec_per_iter']:>10.3f}{r['time_ratio']:>8.2f}x")
    with open(osp.join(out_dir, 'benchmark_dist.json'), 'w') as f:
        json.dump(dict(meta=meta, results=results), f, indent=2)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4))
    bars = ax.bar([r['name'] for r in results], [r['sec_per_iter'] for r in results],
                  color=['tab:gray'] + ['tab:blue'] * (len(results) - 1))
    for b, r in zip(bars, results):
        ax.annotate(f"{r['time_ratio']:.2f}x", (b.get_x() + b.get_width() / 2, b.get_height()), ha='center',
                    va='bottom')
    ax.set_ylabel('seconds / iteration')
    ax.set_title(f"{osp.basename(args.config)}\n{args.nproc} x {meta['backend']}, global batch {args.batch_size}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(osp.join(out_dir, 'benchmark_dist.png'), dpi=120)
    print(f'wrote {out_dir}/benchmark_dist.json and benchmark_dist.png')
    return results


if __name__ == '__main__':
    run()
