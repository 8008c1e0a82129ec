"""Throughput of module-parallel training (K processes) against single-process local training.

    python tools/analysis/benchmark_pipeline.py [CONFIG] [--ks 2 4] [--batch-size 128]
        [--micro-batches 4] [--queue-size 2] [--iters 8] [--warmup 2] [--rounds 2]
        [--baseline-threads 1 2] [--split equal|balanced|time] [--out-dir DIR] [--cfg-options k=v ...]

For every K, side by side and in interleaved rounds:

- ``single/1t``: one process, one intra-op thread, the same K-module model trained as ordinary
  local training does it (``PerModuleBackward``, the global batch in the same M micro-batches,
  one step per global batch): exactly the work of the pipeline, on one core;
- ``single/2t`` (``--baseline-threads``): the same with as many threads as the pipeline has
  processes where the machine has the cores ("the same total cores");
- ``pipeline``: K processes (gloo on CPU, one thread each; nccl with one GPU each where K GPUs
  exist), the synchronous schedule of :mod:`localvision.engine.pipeline`.

Throughput is measured in steady state (after ``--warmup`` iterations) on the last stage. Memory:
the peak of live tensors of one iteration per process (CPU; allocator peak on CUDA), including
parameters, gradients and optimizer state. Writes ``benchmark_pipeline.json`` / ``.png``.

``--split``: ``time`` (default: cuts minimising the slowest stage's measured forward+backward time,
what a pipeline needs), ``equal`` (block counts: equal FLOPs for CIFAR ResNets, but not equal CPU
time) or ``balanced`` (the split's memory-balanced cuts: early cuts, unbalanced compute).
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
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs/cls/cifar_resnet32_shapes_greedy_k2_pipeline.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    p.add_argument('--model', default='cifar_resnet56', help='timm model name (model.backbone.model_name)')
    p.add_argument('--ks', type=int, nargs='+', default=[2, 4])
    p.add_argument('--batch-size', type=int, default=128, help='global batch')
    p.add_argument('--micro-batches', type=int, default=4)
    p.add_argument('--queue-size', type=int, default=2)
    p.add_argument('--input-size', type=int, nargs=3, default=(3, 32, 32), metavar=('C', 'H', 'W'))
    p.add_argument('--iters', type=int, default=8, help='timed iterations')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--baseline-threads', type=int, nargs='+', default=[1, 2])
    p.add_argument('--split', choices=['equal', 'balanced', 'time'], default='time')
    p.add_argument('--no-memory', action='store_true', help='skip the live-tensor memory probe')
    p.add_argument('--out-dir', default=None)
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_cfg(args, k: int, cuts=None) -> Config:
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.model.backbone['model_name'] = args.model
    cfg.model.split = dict(input_size=tuple(args.input_size))
    if cuts is not None:
        cfg.model.split['cuts'] = list(cuts)
    else:
        cfg.model.split.update(num_modules=k, strategy='balanced' if args.split == 'balanced' else 'equal')
    cfg.model.num_classes = 10
    cfg.train_dataloader['batch_size'] = args.batch_size
    cfg.param_scheduler = []
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.warmup + args.iters + 1)
    cfg.default_hooks = dict(logger=dict(interval=10 ** 6), checkpoint=dict(by_epoch=False, interval=10 ** 6,
                                                                          max_keep_ckpts=1))
    cfg.pipeline = dict(schedule='sync', micro_batches=args.micro_batches, queue_size=args.queue_size,
                        replicas=1, val_at_end=False, export=False)
    cfg.randomness = dict(seed=0)
    return cfg


def _setup(cfg):
    from mmengine.registry import init_default_scope

    from localvision.utils.setup_env import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope(cfg.get('default_scope', 'localvision'))


def _time_cuts(args, k: int):
    """Cuts minimising the slowest module's measured forward + backward time (one thread)."""
    from localvision.engine.pipeline import build_model
    from localvision.models.split.block_sequence import run_blocks
    from localvision.models.split.cuts import balanced_cuts
    cfg = make_cfg(args, k)
    _setup(cfg)
    torch.set_num_threads(1)
    model = build_model(cfg).train()
    seq = model.backbone.seq
    b = args.batch_size // args.micro_batches
    x = torch.randn(b, *args.input_size)
    costs = []
    for i in range(len(seq)):
        x = x.detach().requires_grad_(True)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            y = run_blocks(seq, x, i, i, apply_final_norm=False)
            y.float().sum().backward()
            ts.append(time.perf_counter() - t0)
        costs.append(min(ts))
        x = y.detach()
    return balanced_cuts(costs, k), costs


# -- workers -----------------------------------------------------------------------------------
def _baseline_worker(rank, args, cfg_text, threads, out_file):
    from mmengine.optim import build_optim_wrapper

    from benchmark_memory import synthetic_cls_batch
    from localvision.engine.pipeline import build_model, split_micro
    torch.set_num_threads(threads)
    cfg = Config.fromstring(cfg_text, '.py')
    _setup(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    ow_cfg = copy.deepcopy(cfg.optim_wrapper)
    ow_cfg['accumulative_counts'] = args.micro_batches
    ow = build_optim_wrapper(model, ow_cfg)
    batch = synthetic_cls_batch(args.batch_size, args.input_size, 10)

    def iteration():
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        for micro in split_micro(data, args.micro_batches):
            model.executor(model, model.make_context(micro['inputs'], micro['data_samples']), ow)
    for _ in range(args.warmup):
        iteration()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        iteration()
    wall = time.perf_counter() - t0
    mem = None
    if not args.no_memory:
        from localvision.utils.memory import LiveTensorMemoryTracker
        with LiveTensorMemoryTracker(baseline=(model, ow.optimizer)) as tr:
            iteration()
        mem = dict(peak_bytes=int(tr.peak_bytes), baseline_bytes=int(tr.baseline_bytes))
    with open(out_file, 'w') as f:
        json.dump(dict(wall_s=wall, throughput=args.iters * args.batch_size / wall, memory=mem), f)


def _pipeline_worker(rank, world, port, args, cfg_text, out_dir):
    import torch.distributed as dist

    from benchmark_memory import synthetic_cls_batch
    from localvision.engine.pipeline import PipelineRunner, check_pipeline_cfg
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    if cuda:
        torch.cuda.set_device(rank)
    else:
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    torch.set_num_threads(1)
    dist.init_process_group('nccl' if cuda else 'gloo', rank=rank, world_size=world)
    cfg = Config.fromstring(cfg_text, '.py')
    cfg.work_dir = out_dir
    pc = check_pipeline_cfg(cfg, world)
    batch = synthetic_cls_batch(args.batch_size, args.input_size, 10)

    def source():
        while True:
            yield copy.deepcopy(batch)
    total = args.warmup + args.iters + 1
    runner = PipelineRunner(cfg, pc, batch_source=source(), iters_per_epoch=total,
                            profile_memory_iter=None if args.no_memory else total - 1)
    runner.train()
    dist.destroy_process_group()


def run_baseline(args, cfg, threads):
    with tempfile.TemporaryDirectory() as tmp:
        out = osp.join(tmp, 'r.json')
        mp.spawn(_baseline_worker, args=(args, cfg.pretty_text, threads, out), nprocs=1, join=True)
        return json.load(open(out))


def run_pipeline(args, cfg, k):
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_pipeline_worker, args=(k, free_port(), args, cfg.pretty_text, tmp), nprocs=k, join=True)
        stages = [json.load(open(osp.join(tmp, 'pipeline_logs', f'summary_rank{r}.json'))) for r in range(k)]
    last = stages[-1]['iter_end_times']
    w, n = args.warmup, args.iters
    wall = last[w + n - 1] - last[w - 1]
    return dict(wall_s=wall, throughput=n * args.batch_size / wall,
                stages=[dict(stage=s['stage'], compute_s=s['compute_s'], recv_wait_s=s['recv_wait_s'],
                             credit_wait_s=s['credit_wait_s'], data_s=s['data_s'], step_s=s['step_s'],
                             wall_s=s['wall_s'], memory=s.get('memory'), owned_param_bytes=s['owned_param_bytes'])
                        for s in stages])


def main(argv=None):
    args = parse_args(argv)
    out_dir = args.out_dir or osp.join(ROOT, 'work_dirs', 'benchmarks', f'pipeline_{args.model}')
    os.makedirs(out_dir, exist_ok=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    cfgs, cut_info = {}, {}
    for k in args.ks:
        cuts = None
        if args.split == 'time':
            cuts, costs = _time_cuts(args, k)
            cut_info[k] = dict(cuts=cuts, block_seconds=costs)
        cfgs[k] = make_cfg(args, k, cuts)
    results = {}
    for rnd in range(args.rounds):
        for k in args.ks:
            for t in args.baseline_threads:
                r = run_baseline(args, cfgs[k], t)
                results.setdefault(f'K={k} single/{t}t', []).append(r)
                print(f'round {rnd}: K={k} single process, {t} thread(s): {r["throughput"]:.1f} img/s', flush=True)
            r = run_pipeline(args, cfgs[k], k)
            results.setdefault(f'K={k} pipeline', []).append(r)
            print(f'round {rnd}: K={k} pipeline, {k} processes: {r["throughput"]:.1f} img/s', flush=True)
    rows = []
    for k in args.ks:
        base1 = statistics.median(r['throughput'] for r in results[f'K={k} single/1t'])
        for name in [f'K={k} single/{t}t' for t in args.baseline_threads] + [f'K={k} pipeline']:
            runs = results[name]
            thr = statistics.median(r['throughput'] for r in runs)
            procs = k if 'pipeline' in name else 1
            cores = k if 'pipeline' in name else int(name.split('/')[1][:-1])
            row = dict(name=name, k=k, processes=procs, cores_used=cores, throughput=thr,
                       speedup_vs_1core=thr / base1, efficiency=thr / base1 / cores,
                       runs=[r['throughput'] for r in runs])
            last = runs[-1]
            if 'pipeline' in name:
                row['stages'] = last['stages']
                row['peak_bytes_per_process'] = [(s['memory'] or {}).get('peak_bytes') for s in last['stages']]
            else:
                row['peak_bytes_per_process'] = [(last.get('memory') or {}).get('peak_bytes')]
            rows.append(row)
    meta = dict(config=args.config, model=args.model, batch_size=args.batch_size, micro_batches=args.micro_batches,
                queue_size=args.queue_size, iters=args.iters, warmup=args.warmup, rounds=args.rounds,
                split=args.split, cuts={k: list(cfgs[k].model.split.get('cuts') or []) for k in args.ks},
                time_split=cut_info, cpus=cpus, cuda=torch.cuda.is_available(), torch=torch.__version__)
    # the cuts actually used (resolved by the model)
    from localvision.engine.pipeline import build_model
    for k in args.ks:
        _setup(cfgs[k])
        meta['cuts'][k] = build_model(cfgs[k]).backbone.cuts
    print(f"\n{args.model}, global batch {args.batch_size} in {args.micro_batches} micro-batches, {cpus} CPUs "
          f"available, split {args.split}")
    print(f"{'variant':<22}{'img/s':>9}{'vs 1 core':>11}{'efficiency':>12}   peak MiB per process")
    for r in rows:
        mem = ', '.join(f'{b / 2**20:.0f}' if b else '-' for b in r['peak_bytes_per_process'])
        print(f"{r['name']:<22}{r['throughput']:>9.1f}{r['speedup_vs_1core']:>10.2f}x{r['efficiency']:>11.0%}   {mem}")
    with open(osp.join(out_dir, 'benchmark_pipeline.json'), 'w') as f:
        json.dump(dict(meta=meta, results=rows), f, indent=2)
    plot(rows, meta, osp.join(out_dir, 'benchmark_pipeline.png'))
    print(f'wrote {out_dir}/benchmark_pipeline.json and benchmark_pipeline.png')
    return rows


def plot(rows, meta, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [r['name'] for r in rows]
    colors = ['tab:blue' if 'pipeline' in n else 'tab:gray' for n in names]
    bars = ax.bar(range(len(rows)), [r['throughput'] for r in rows], color=colors)
    for b, r in zip(bars, rows):
        ax.annotate(f"{r['speedup_vs_1core']:.2f}x", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha='center', va='bottom', fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([n.replace(' ', '\n') for n in names], fontsize=8)
    ax.set_ylabel('images / second (steady state)')
    ax.set_title(f"{meta['model']}, batch {meta['batch_size']} / {meta['micro_batches']} micro-batches, "
                 f"{meta['cpus']} CPUs", fontsize=9)
    x = 0
    ticks, labels = [], []
    for r in rows:
        for i, b in enumerate(r['peak_bytes_per_process']):
            if b:
                ax2.bar(x, b / 2**20, color='tab:blue' if 'pipeline' in r['name'] else 'tab:gray')
            ticks.append(x)
            what = f'stage {i}' if 'pipeline' in r['name'] else r['name'].split()[1]
            labels.append(f"{r['name'].split()[0]} {what}")
            x += 1
        x += 0.5
    ax2.set_xticks(ticks)
    ax2.set_xticklabels(labels, rotation=60, ha='right', fontsize=7)
    ax2.set_ylabel('peak live tensors per process (MiB)')
    ax2.set_title('memory per process', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    main()
