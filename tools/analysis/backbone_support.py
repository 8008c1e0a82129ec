"""Which timm architectures localvision can split: one small model per timm module, measured.

    python tools/analysis/backbone_support.py [--out-dir DIR] [--timeout 120] [--jobs 2]
        [--modules resnet swin_transformer ... [--recheck]] [--max-size 224]

For every architecture module of ``timm.list_modules()`` it picks the smallest-named variant
(``pretrained=False``), builds ``StagedTimm`` at a small input (64 px, else the model's default
size capped at ``--max-size``, both rounded down to a multiple of the patch size; a model built for a larger input is first built for the capped size,
``img_size=``, where it takes that argument), checks that K=2 and K=4 modules run in a row equal
``forward_features`` (eval mode), and runs one ``PerModuleBackward`` step of a K=2
``localvision.cls.LocalImageClassifier`` (mmpretrain ``LinearClsHead`` on timm's pre-logits). Each
model runs in its own process under ``--timeout``; results are
appended to ``OUT/backbone_support.jsonl`` as they come, so an interrupted sweep resumes. Writes
``backbone_support.md`` / ``.json`` (architecture, example model, supported, blocks, note) and
prints the coverage.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

# the smallest variant first: a size word among the name's parts, then the smallest number in the
# name (regnetx_002, resnet18), then the shortest name; names of giant variants last
SIZE_WORDS = ('atto', 'zepto', 'femto', 'pico', 'nano', 'micro', 'tiny', 'xxs', 'xs', 'mini', 'small', 's', 't', 'b0',
              's0', 'm0', 'lite0', 'base')
TOO_BIG = re.compile(r'huge|giant|gigantic|large|xlarge|_xl|_448|_512|_560|_384|_336|senet154')


def size_key(name: str):
    parts = re.split(r'[_.]', name)
    rank = min((SIZE_WORDS.index(p) for p in parts if p in SIZE_WORDS), default=len(SIZE_WORDS))
    numbers = [int(n) for n in re.findall(r'\d+', name)] or [0]
    return (bool(TOO_BIG.search(name)), rank, min(numbers), len(name), name)


def pick_models(modules: Optional[List[str]] = None) -> Dict[str, str]:
    """``{architecture module: smallest-named model}``."""
    import timm
    out = {}
    for module in modules or timm.list_modules():
        names = timm.list_models(module=module)
        if names:
            out[module] = min(names, key=size_key)
    return out


def check_one(name: str, max_size: int) -> dict:
    """Build, compare with ``forward_features`` for K=2 and K=4, one training step (K=2)."""
    import warnings
    warnings.filterwarnings('ignore')
    import timm
    import torch
    from mmengine.optim import OptimWrapper

    from mmpretrain.structures import DataSample

    from localvision.cls import LocalImageClassifier
    from localvision.models.split import StagedTimm
    torch.set_num_threads(1)
    res = dict(model=name, supported=False, blocks=0, k2=False, k4=False, train=False, note='')
    default = timm.models.get_pretrained_cfg(name).input_size if timm.models.get_pretrained_cfg(name) else None
    default = tuple(default or (3, 224, 224))
    # 64 px, else the default size capped at --max-size (Inception needs at least 75 px: it is checked at
    # --max-size rather than not at all; a model that only runs at its larger default size fails there)
    # sizes in multiples of the patch size (a ViT with 14 px patches takes 252 px, not 256)
    from localvision.models.split.graph_reader import input_multiple
    try:
        with torch.device('meta'):
            ph, pw = input_multiple(timm.create_model(name, pretrained=False))
    except Exception:  # noqa: BLE001  (the build below reports it)
        ph, pw = 1, 1
    capped = (default[0], min(default[1], max_size) // ph * ph, min(default[2], max_size) // pw * pw)
    attempts = [((default[0], 64 // ph * ph, 64 // pw * pw), {}), (capped, {})]
    if capped != default:  # a model built for a larger input (a ViT at 518 / 1024 px): build it for the capped size
        attempts.insert(0, (capped, dict(img_size=capped[1:])))
    st, err, kwargs = None, '', {}
    for size, kwargs in attempts:
        try:
            torch.manual_seed(0)
            st = StagedTimm(name, split=dict(num_modules=2, strategy='equal', input_size=size), num_classes=5,
                            **kwargs).eval()
            x = torch.randn(1, *size)
            with torch.no_grad():
                ref = st.model.forward_features(x)
            break
        except Exception as e:  # noqa: BLE001  (recorded in the table)
            st, err = None, f'{type(e).__name__}: {e}'.splitlines()[0][:400]
    if st is None:
        res['note'] = err if capped == default else \
            f'default input {default[1]}x{default[2]} over --max-size (tried {capped[1]}x{capped[2]}); {err}'
        return res
    res.update(blocks=st.num_blocks, input=list(size), **(dict(timm_kwargs=kwargs) if kwargs else {}))
    for k in (2, 4):
        if k > st.num_blocks:
            res['note'] = f'{st.num_blocks} blocks'
            continue
        st.split_cfg = dict(st.split_cfg, num_modules=k)
        st.resolve_split()
        with torch.no_grad():
            ours = st(x)
        try:
            torch.testing.assert_close(ours, ref)
            res[f'k{k}'] = True
        except AssertionError as e:
            res['note'] = f'K={k} differs from forward_features: ' + str(e).splitlines()[0][:120]
    try:
        torch.manual_seed(0)
        model = LocalImageClassifier(
            backbone=dict(type='StagedTimm', model_name=name, **kwargs), neck=None,
            head=dict(type='LinearClsHead', num_classes=4, in_channels=0, loss=dict(type='CrossEntropyLoss')),
            split=dict(num_modules=2, strategy='equal', input_size=size),
            local_objective=dict(type='Greedy', head=dict(type='PoolLinearHead')),
            data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[64.0] * 3))
        batch = dict(inputs=[torch.randint(0, 256, size, dtype=torch.uint8) for _ in range(2)],
                     data_samples=[DataSample().set_gt_label(i) for i in range(2)])
        losses = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
        res['train'] = all(bool(torch.isfinite(v).all()) for v in losses.values())
    except Exception as e:  # noqa: BLE001
        res['note'] = (res['note'] + '; ' if res['note'] else '') + 'train step: ' + \
            f'{type(e).__name__}: {e}'.splitlines()[0][:160]
    res['supported'] = res['k2'] and res['k4'] and res['train']
    return res


def run_isolated(arch: str, name: str, args) -> dict:
    """``check_one`` in a fresh process under the time limit (a crash or hang is a result too)."""
    t = time.time()
    cmd = [sys.executable, osp.abspath(__file__), '--one', name, '--max-size', str(args.max_size)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith('{')]
        res = json.loads(line[-1]) if line else dict(
            model=name, supported=False, blocks=0, note=f'process ended with code {p.returncode}: '
            + (p.stderr.strip().splitlines() or [''])[-1][:160])
    except subprocess.TimeoutExpired:
        res = dict(model=name, supported=False, blocks=0, note=f'over the {args.timeout} s time limit')
    res.update(architecture=arch, seconds=round(time.time() - t, 1))
    return res


def write_tables(results: List[dict], out_dir: str) -> str:
    results = sorted(results, key=lambda r: r['architecture'])
    n_ok = sum(r['supported'] for r in results)
    with open(osp.join(out_dir, 'backbone_support.json'), 'w') as f:
        json.dump(dict(supported=n_ok, total=len(results), results=results), f, indent=1)
    lines = [f'{n_ok} of {len(results)} timm architecture modules split (K=2 and K=4 equal `forward_features`, '
             'one local training step), one small model each, `pretrained=False`.', '',
             '| architecture | example model | supported | blocks | note |', '|---|---|---|---|---|']
    for r in results:
        note = r.get('note', '').replace('|', '\\|')
        lines.append(f"| {r['architecture']} | `{r['model']}` | {'yes' if r['supported'] else 'no'} | "
                     f"{r.get('blocks') or ''} | {note} |")
    md = '\n'.join(lines) + '\n'
    with open(osp.join(out_dir, 'backbone_support.md'), 'w') as f:
        f.write(md)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out-dir', default='work_dirs/backbone_support')
    ap.add_argument('--modules', nargs='*', help='timm architecture modules (default: all)')
    ap.add_argument('--timeout', type=int, default=120, help='seconds per model')
    ap.add_argument('--jobs', type=int, default=2, help='models checked at once')
    ap.add_argument('--max-size', type=int, default=256,
                    help='largest input size tried (64 px first, then the default size capped at this)')
    ap.add_argument('--tables-only', action='store_true', help='write the tables from the results so far')
    ap.add_argument('--recheck', action='store_true',
                    help='check the --modules again even where a result is recorded (the newest result counts)')
    ap.add_argument('--one', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(check_one(args.one, args.max_size)))
        return
    os.makedirs(args.out_dir, exist_ok=True)
    log = osp.join(args.out_dir, 'backbone_support.jsonl')
    done = {}
    if osp.exists(log):
        with open(log) as f:
            done = {r['architecture']: r for r in map(json.loads, f) if r}
    todo = [] if args.tables_only else [(a, m) for a, m in pick_models(args.modules).items()
                                        if a not in done or (args.recheck and args.modules)]
    print(f'{len(done)} architectures already checked, {len(todo)} to go', flush=True)

    def job(item):
        res = run_isolated(*item, args)
        with open(log, 'a') as f:
            f.write(json.dumps(res) + '\n')
        print(f"{res['architecture']:28s} {res['model']:40s} {'yes' if res['supported'] else 'no ':3s} "
              f"{res.get('blocks', 0):3d} {res['seconds']:6.1f}s {res.get('note', '')}", flush=True)
        return res

    with ThreadPoolExecutor(args.jobs) as pool:
        done.update((r['architecture'], r) for r in pool.map(job, todo))
    results = list(done.values())  # the tables cover every recorded architecture
    write_tables(results, args.out_dir)
    n_ok = sum(r['supported'] for r in results)
    print(f'coverage: {n_ok}/{len(results)} architecture modules ({100 * n_ok / max(1, len(results)):.1f} %)')


if __name__ == '__main__':
    main()
