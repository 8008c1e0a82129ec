"""The main demo: DeepLabV3 trained as K=4 InfoPro modules vs end to end, on the built-in set.

    python tools/seg_demo.py [--iters 400] [--jobs 2] [--seed 0] [--work-dir work_dirs/seg_demo]
                             [--local-config configs/seg/deeplab_infopro_k4_demo.py]
                             [--e2e-config configs/seg/deeplab_e2e_demo.py]

Generates the built-in segmentation set if it is missing (``tools/misc/make_demo_data.py seg``),
trains the local (K=4, InfoPro) and the end-to-end model with ``tools/train.py`` for the same
iterations (``--jobs 2``: side by side, one core each; ``--jobs 1``: one after the other),
evaluates both with mmseg's IoUMetric and prints mIoU, peak training memory (of one iteration,
measured by ``localvision.PeakMemoryHook``) and training time next to each other. The summary is
saved to ``<work-dir>/summary.json``, and ``<work-dir>/demo.png`` shows a few validation images
with their ground truth and both models' predictions, and the memory of both. Each run is an ordinary ``tools/train.py`` run: its work
dir holds the checkpoint that ``tools/test.py`` evaluates and ``tools/export_checkpoint.py``
exports.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import _stack_check  # noqa: F401  (first: one clear line without the stack)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHOW = re.compile(r'Iter\(train\)|Iter\(val\)|peak training memory|final validation metrics|^error:|^Traceback|^\w+Error')
FINAL = re.compile(r'final validation metrics: (.*)$')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--local-config', default='configs/seg/deeplab_infopro_k4_demo.py')
    p.add_argument('--e2e-config', default='configs/seg/deeplab_e2e_demo.py')
    p.add_argument('--iters', type=int, default=None, help="training iterations of both runs (default: the config's)")
    p.add_argument('--jobs', type=int, default=2, choices=[1, 2],
                   help='2: train both side by side, each on half the cores; 1: one after the other')
    p.add_argument('--seed', type=int, default=None, help="training seed of both runs (default: the config's, 0)")
    p.add_argument('--data-root', default='data/lv_shapes_seg')
    p.add_argument('--work-dir', default='work_dirs/seg_demo')
    return p.parse_args(argv)


class Job:
    """One ``tools/train.py`` run in a subprocess, its progress lines shown with a tag."""

    def __init__(self, tag: str, config: str, work_dir: str, options: List[str], threads: int) -> None:
        self.tag, self.config, self.work_dir = tag, config, work_dir
        self.cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir]
        if options:
            self.cmd += ['--cfg-options'] + options
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.lines: List[str] = []
        self.rc: Optional[int] = None
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self._proc: Optional[subprocess.Popen] = None
        self._reader: Optional[threading.Thread] = None

    def start(self) -> None:
        self._t0 = time.time()
        self._proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            line = line.rstrip('\n')
            self.lines.append(line)
            if SHOW.search(line):
                print(f'[{self.tag}] {line[line.find(" - ") + 3:] if " - mmengine - " in line else line}', flush=True)
        self._t_end = time.time()  # output closed: the run has ended

    def wait(self) -> int:
        _, status, usage = os.wait4(self._proc.pid, 0)  # like Popen.wait, plus the CPU time used
        self.rc = self._proc.returncode = os.waitstatus_to_exitcode(status)
        self._reader.join()
        self.seconds = self._t_end - self._t0
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return self.rc

    @property
    def started(self) -> bool:
        return self._proc is not None

    def stop(self) -> None:
        """Ask the run to stop (SIGTERM: it finishes its iteration and saves a checkpoint)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def result(self) -> Dict[str, object]:
        metrics: Dict[str, float] = {}
        for line in self.lines:
            m = FINAL.search(line)
            if m:
                for kv in m.group(1).split(', '):
                    k, _, v = kv.partition(': ')
                    metrics[k] = float(v)
        peak = None
        peak_file = osp.join(ROOT, self.work_dir, 'peak_memory.json')
        if osp.isfile(peak_file):
            with open(peak_file) as f:
                peak = json.load(f)['peak_bytes']
        return dict(config=self.config, work_dir=self.work_dir, metrics=metrics, peak_bytes=peak,
                    train_seconds=round(self.seconds, 1), cpu_seconds=round(self.cpu_seconds, 1))


def last_checkpoint(work_dir: str) -> str:
    with open(osp.join(ROOT, work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def render_figure(results: Dict[str, dict], runs: List[dict], data_root: str, out: str, num_images: int = 4) -> str:
    """A PNG: ``num_images`` validation images, their ground truth and each run's prediction (one
    column per run), and the runs' peak training memory as bars."""
    import glob

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    from mmseg.apis import inference_model, init_model
    from PIL import Image

    from localvision.datasets.synthetic_seg import SEG_CLASSES, SEG_PALETTE
    from localvision.utils import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    palette = np.array(SEG_PALETTE, dtype=np.uint8)
    images = sorted(glob.glob(osp.join(ROOT, data_root, 'img_dir', 'val', '*.png')))[:num_images]
    tags = list(results)
    predictions = {}
    for tag, run in zip(tags, runs):  # each run's own saved config (with the demo's options)
        config = osp.join(ROOT, run['work_dir'], osp.basename(run['config']))
        model = init_model(config, last_checkpoint(run['work_dir']), device='cpu')
        predictions[tag] = [inference_model(model, p).pred_sem_seg.data[0].numpy() for p in images]
    cols = 2 + len(tags)
    fig = plt.figure(figsize=(2.2 * cols + 3.2, 2.2 * len(images)))
    grid = fig.add_gridspec(len(images), cols + 1, width_ratios=[1] * cols + [1.6])
    for i, path in enumerate(images):
        gt = np.array(Image.open(path.replace('img_dir', 'ann_dir')))
        panels = [('image', np.array(Image.open(path).convert('RGB'))), ('ground truth', palette[gt])]
        panels += [(tag, palette[predictions[tag][i]]) for tag in tags]
        for j, (title, img) in enumerate(panels):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(img, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    ax = fig.add_subplot(grid[:, cols])
    peaks = [results[t]['peak_bytes'] / 2**20 if results[t]['peak_bytes'] else 0 for t in tags]
    miou = [results[t]['metrics'].get('mIoU', float('nan')) for t in tags]
    bars = ax.bar(range(len(tags)), peaks, color=['tab:blue', 'tab:gray'][:len(tags)])
    for b, p, m in zip(bars, peaks, miou):
        ax.text(b.get_x() + b.get_width() / 2, p, f'{p:.0f} MiB\n{m:.1f} mIoU', ha='center', va='bottom', fontsize=8)
    ax.set_xticks(range(len(tags)))
    ax.set_xticklabels(tags, fontsize=8)
    ax.set_ylabel('peak training memory (MiB)')
    ax.set_ylim(0, max(peaks + [1]) * 1.25)
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[c] / 255) for c in range(len(SEG_CLASSES))]
    fig.legend(handles, SEG_CLASSES, loc='lower center', ncol=len(SEG_CLASSES), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    os.makedirs(osp.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def ensure_data(data_root: str) -> int:
    """Generate the built-in segmentation set in ``data_root`` unless it is there; the exit code."""
    if osp.isdir(osp.join(ROOT, data_root, 'img_dir')):
        return 0
    print(f'generating the built-in segmentation set in {data_root} ...', flush=True)
    return subprocess.call([sys.executable, osp.join(ROOT, 'tools', 'misc', 'make_demo_data.py'), 'seg',
                            '--out', data_root], cwd=ROOT)


def run_options(data_root: str, iters: Optional[int]) -> List[str]:
    """``--cfg-options`` of a demo run: the data root of every split and, if given, the iterations."""
    options = [f'{split}_dataloader.dataset.data_root={data_root}' for split in ('train', 'val', 'test')]
    if iters is not None:
        options += [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
                    f'default_hooks.checkpoint.interval={iters}']
    return options


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    from localvision.utils.memory import format_bytes
    rc = ensure_data(args.data_root)
    if rc:
        return rc
    options = run_options(args.data_root, args.iters)
    if args.seed is not None:
        options.append(f'randomness.seed={args.seed}')
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.jobs)
    jobs = [Job('K=4 InfoPro', args.local_config, osp.join(args.work_dir, 'local_k4'), options, threads),
            Job('E2E', args.e2e_config, osp.join(args.work_dir, 'e2e'), options, threads)]
    print(f'training {len(jobs)} models ({"side by side" if args.jobs == 2 else "one after the other"}, '
          f'{threads} thread(s) each); logs in {args.work_dir}/*/', flush=True)
    t0 = time.time()

    def on_sigterm(signum, frame):  # like Ctrl-C: let both runs finish their iteration and save
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if args.jobs == 2:
            for j in jobs:
                j.start()
            for j in jobs:
                j.wait()
        else:
            for j in jobs:
                j.start()
                if j.wait():
                    break
    except KeyboardInterrupt:  # the runs got the Ctrl-C too: each finishes its iteration and saves
        for j in jobs:
            j.stop()
        for j in jobs:
            if j.started and j.rc is None:
                j.wait()
        for j in jobs:
            if j.started and j.rc not in (0, 130):
                print(f'[{j.tag}] ended with exit {j.rc} without saving; last lines:\n' + '\n'.join(j.lines[-15:]),
                      file=sys.stderr)
        print('interrupted: the runs that ended with 130 saved a resumable checkpoint in their work dir '
              '(tools/train.py ... --resume)')
        return 130
    failed = [j for j in jobs if j.rc]
    if failed and all(j.rc == 130 for j in failed):  # the runs were stopped by a signal and saved
        print('interrupted: each run saved a resumable checkpoint in its work dir (tools/train.py ... --resume)')
        return 130
    for j in failed:
        print(f'[{j.tag}] failed (exit {j.rc}); last lines:\n' + '\n'.join(j.lines[-15:]), file=sys.stderr)
    if failed:
        return 1
    results = {j.tag: j.result() for j in jobs}
    local, e2e = results['K=4 InfoPro'], results['E2E']
    print(f'\n{"model":<14}{"mIoU":>8}{"aAcc":>8}{"peak train memory":>20}{"vs E2E":>9}{"wall time":>11}'
          f'{"CPU time":>10}')
    for tag, r in results.items():
        m = r['metrics']
        ratio = (f'{100 * r["peak_bytes"] / e2e["peak_bytes"]:.0f} %'
                 if r['peak_bytes'] and e2e['peak_bytes'] else '-')
        peak = format_bytes(r['peak_bytes']) if r['peak_bytes'] else '-'
        print(f'{tag:<14}{m.get("mIoU", float("nan")):>8.2f}{m.get("aAcc", float("nan")):>8.2f}{peak:>20}'
              f'{ratio:>9}{r["train_seconds"] / 60:>9.1f} m{r["cpu_seconds"] / 60:>8.1f} m')
    total = time.time() - t0
    ckpt = osp.join(local['work_dir'], 'last_checkpoint')
    if osp.isfile(osp.join(ROOT, ckpt)):
        with open(osp.join(ROOT, ckpt)) as f:
            ckpt = osp.relpath(f.read().strip(), ROOT)
    figure = osp.join(args.work_dir, 'demo.png')
    render_figure(results, [local, e2e], args.data_root, osp.join(ROOT, figure))
    print(f'predictions and memory: {figure}')
    print(f'total {total / 60:.1f} min; evaluate again with: python tools/test.py {args.local_config} {ckpt}')
    with open(osp.join(ROOT, args.work_dir, 'summary.json'), 'w') as f:
        json.dump(dict(results=results, total_seconds=round(total, 1), jobs=args.jobs, threads=threads), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
