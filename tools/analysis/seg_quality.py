"""Learning quality on segmentation: local objectives against E2E over several seeds.

    python tools/analysis/seg_quality.py [--runs NAME=CONFIG ...] [--seeds 0 1 2] [--iters N]
        [--jobs 2] [--threads N] [--data-root data/lv_shapes_seg] [--out-dir work_dirs/seg_quality]

Trains every config of ``--runs`` once per seed with ``tools/train.py`` (an ordinary run: its work
dir ``<out-dir>/runs/<name>_s<seed>/`` holds the checkpoint, log and ``peak_memory.json``),
evaluates it with the config's evaluator (mmseg's ``IoUMetric``) and prints mIoU and aAcc as mean ±
std over the seeds, with the peak training memory of one iteration (``PeakMemoryHook``) against
E2E's. The default runs are the segmentation demo's: DeepLabV3 on a thin ResNet-32, K=4 with
InfoPro's segmentation objective (``InfoProSeg``), K=4 greedy (``SegGreedy``: the same auxiliary
head without the reconstruction decoder), and E2E, on the built-in segmentation set (generated on
first use).

Results: ``seg_quality.json`` (``summary``: one row per run name; ``results``: every run) and
``seg_quality.png`` in ``--out-dir``. Each finished run is saved in its work dir as
``result.json``; a later invocation with the same ``--out-dir`` and settings takes it from there
(an interrupted sweep resumes, more seeds extend it).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import statistics
import sys
from typing import Dict, List, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
sys.path.insert(0, ROOT)

from seg_demo import Job, ensure_data, run_options  # noqa: E402  (a tools/train.py run in a subprocess)

DEFAULT_RUNS = ['InfoPro K=4=configs/seg/deeplab_infopro_k4_demo.py',
                'greedy K=4=configs/seg/deeplab_greedy_k4_demo.py',
                'E2E=configs/seg/deeplab_e2e_demo.py']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs', nargs='+', default=DEFAULT_RUNS, metavar='NAME=CONFIG',
                   help='the runs to compare, each a name and a config (the name may hold "="; the config is '
                        'what follows the last one); the one named E2E is the memory reference')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--iters', type=int, default=None, help="training iterations (default: the configs')")
    p.add_argument('--jobs', type=int, default=2, choices=[1, 2], help='runs trained side by side')
    p.add_argument('--threads', type=int, default=None, help='threads of each run (default: the cores / --jobs)')
    p.add_argument('--data-root', default='data/lv_shapes_seg')
    p.add_argument('--out-dir', default='work_dirs/seg_quality')
    args = p.parse_args(argv)
    runs = []
    for spec in args.runs:
        name, sep, config = spec.rpartition('=')
        if not sep or not name or not config.endswith('.py'):
            p.error(f'--runs: {spec!r} is not NAME=CONFIG.py')
        if not osp.isfile(osp.join(ROOT, config)):
            p.error(f'--runs: {config} does not exist')
        runs.append((name, config))
    if len({n for n, _ in runs}) != len(runs):
        p.error('--runs: two runs have the same name')
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f'--seeds: {args.seeds} repeats a seed')
    args.runs = runs
    return args


def slug(name: str) -> str:
    return ''.join(c if c.isalnum() else '_' for c in name).strip('_').lower()


def _mean_std(values: List[float]) -> Tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: List[dict]) -> List[dict]:
    """One row per run name: mIoU and aAcc (mean, std, per seed), peak memory and time (mean)."""
    rows: Dict[str, dict] = {}
    for r in results:
        rows.setdefault(r['name'], dict(name=r['name'], config=r['config'], runs=[]))['runs'].append(r)
    out = []
    for row in rows.values():
        runs = row.pop('runs')
        row['seeds'] = [r['seed'] for r in runs]
        for key in ('mIoU', 'aAcc'):
            vals = [r['metrics'].get(key, float('nan')) for r in runs]
            row[key], row[key + '_std'] = _mean_std(vals)
            row[key + '_per_seed'] = vals
        peaks = [r['peak_bytes'] for r in runs if r.get('peak_bytes')]
        row['peak_bytes'] = statistics.fmean(peaks) if peaks else None
        row['cpu_seconds'] = statistics.fmean(r['cpu_seconds'] for r in runs)
        out.append(row)
    return out


def run(argv=None) -> List[dict]:
    args = parse_args(argv)
    from localvision.utils.memory import format_bytes
    rc = ensure_data(args.data_root)
    if rc:
        raise SystemExit(rc)
    base = run_options(args.data_root, args.iters)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    results: List[dict] = []
    todo: List[Tuple[Job, dict]] = []
    for seed in args.seeds:
        for name, config in args.runs:
            settings = dict(config=config, seed=seed, iters=args.iters, data_root=args.data_root)
            work_dir = osp.join(args.out_dir, 'runs', f'{slug(name)}_s{seed}')
            saved = osp.join(ROOT, work_dir, 'result.json')
            if osp.isfile(saved):
                with open(saved) as f:
                    r = json.load(f)
                if r.get('settings') == settings:
                    print(f"[{name} s{seed}] mIoU {r['metrics'].get('mIoU', float('nan')):.2f}  (saved in {saved})",
                          flush=True)
                    results.append(r)
                    continue
            job = Job(f'{name} s{seed}', config, work_dir, base + [f'randomness.seed={seed}'], threads)
            todo.append((job, dict(name=name, seed=seed, settings=settings, saved=saved)))
    print(f'{len(todo)} run(s) to train, {args.jobs} at a time, {threads} thread(s) each', flush=True)
    failed = []
    for i in range(0, len(todo), args.jobs):
        batch = todo[i:i + args.jobs]
        for job, _ in batch:
            job.start()
        for job, info in batch:
            if job.wait():
                failed.append(job)
                print(f'[{job.tag}] failed (exit {job.rc}); last lines:\n' + '\n'.join(job.lines[-15:]),
                      file=sys.stderr)
                continue
            r = dict(job.result(), name=info['name'], seed=info['seed'], settings=info['settings'])
            with open(info['saved'], 'w') as f:
                json.dump(r, f, indent=1)
            results.append(r)
    if failed:
        raise SystemExit(1)
    order = {name: i for i, (name, _) in enumerate(args.runs)}
    results.sort(key=lambda r: (order[r['name']], r['seed']))
    summary = summarize(results)
    e2e = next((r for r in summary if r['name'] == 'E2E'), None)
    print(f"\nseeds {args.seeds}; mIoU / aAcc as mean ± std")
    head = f"{'run':<16}{'mIoU':>16}{'aAcc':>16}{'per seed (mIoU)':>24}{'peak memory':>14}{'vs E2E':>8}"
    print(head)
    print('-' * len(head))
    for r in summary:
        ratio = (f"{r['peak_bytes'] / e2e['peak_bytes']:.0%}" if e2e and r['peak_bytes'] and e2e['peak_bytes']
                 else '-')
        seeds = ' '.join(f'{v:.1f}' for v in r['mIoU_per_seed'])
        print(f"{r['name']:<16}{r['mIoU']:>9.2f} ± {r['mIoU_std']:<4.2f}{r['aAcc']:>9.2f} ± {r['aAcc_std']:<4.2f}"
              f"{seeds:>24}{format_bytes(r['peak_bytes']) if r['peak_bytes'] else '-':>14}{ratio:>8}")
    os.makedirs(osp.join(ROOT, args.out_dir), exist_ok=True)
    with open(osp.join(ROOT, args.out_dir, 'seg_quality.json'), 'w') as f:
        json.dump(dict(seeds=args.seeds, iters=args.iters, data_root=args.data_root, summary=summary,
                       results=results), f, indent=1)
    plot(summary, osp.join(ROOT, args.out_dir, 'seg_quality.png'))
    print(f'wrote {args.out_dir}/seg_quality.json and seg_quality.png')
    return summary


def plot(summary: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = [r['name'] for r in summary]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar(range(len(names)), [r['mIoU'] for r in summary], yerr=[r['mIoU_std'] for r in summary], capsize=4,
                color=['tab:gray' if n == 'E2E' else f'C{i}' for i, n in enumerate(names)])
    for i, r in enumerate(summary):
        axes[0].scatter([i] * len(r['mIoU_per_seed']), r['mIoU_per_seed'], color='k', s=8, zorder=3)
    axes[0].set_ylabel(f"mIoU (mean ± std, {len(summary[0]['seeds'])} seed(s))")
    axes[1].bar(range(len(names)), [(r['peak_bytes'] or 0) / 2 ** 20 for r in summary],
                color=['tab:gray' if n == 'E2E' else f'C{i}' for i, n in enumerate(names)])
    axes[1].set_ylabel('peak training memory (MiB)')
    for ax in axes:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == '__main__':
    run()
