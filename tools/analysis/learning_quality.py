"""Learning quality of the local-learning methods: accuracy, peak memory and speed, side by side.

    python tools/analysis/learning_quality.py [CONFIG] [--methods e2e greedy dgl infopro_softmax
        infopro_contrast contsup_e contsup_r1 contsup_r1e ...] [--ks 4] [--seeds 0 1 2] [--epochs 15]
        [--train-per-class 375] [--data-root DIR] [--batch-size 64] [--jobs 2] [--out-dir DIR]
        [--cfg-options k=v ...]

Every method is trained from each seed with the config's recipe (optimizer, data pipeline) for
``--epochs`` epochs (a one-epoch linear warm-up, then cosine decay) and validated after every
epoch. CONFIG defaults to ``configs/cls/cifar_resnet32_half_forms24_greedy_k4.py``: a ResNet-32 of
half the CIFAR widths (8/16/32) on the built-in global-form set at 24x24 pixels (``python
tools/misc/make_demo_data.py forms --size 24 --out data/lv_forms24_cls``: its label is a figure that
small, irrelevant elements draw together, so a module that keeps only local evidence loses it),
sized so that the K=4 table with 3 seeds trains in about an hour on 2 CPU cores (``--jobs 2
--workers 0``). ``configs/cls/cifar_resnet32_forms24_greedy_k4.py`` is the full-width network on
that set, ``configs/cls/cifar_resnet32_forms_greedy_k4.py`` the same at 32x32 (``make_demo_data.py
forms``), ``configs/cls/cifar_resnet32_shapes_greedy_k4.py`` the shapes set (``cls``);
``--data-root`` points either at any ImageFolder (``<root>/train/<class>/*``, ``<root>/val/<class>/*``).

For each method and K the table gives, as mean ± std over the seeds:

- top-1 accuracy on the validation split after the last epoch (final) and at its best epoch;
- top-1 on the training split after training (eval mode): whether the budget fits the set;
- peak training memory of one iteration (forward, backward, step), measured after training on
  a real training batch with :func:`localvision.utils.memory.measure_peak_memory` (CUDA
  allocator peak, or on CPU the exact peak of live tensor storages);
- median seconds per training iteration (``train_step`` only, data loading excluded), timed
  after all runs in ``--timing-rounds`` rounds that interleave the methods on one real batch each,
  so a busy machine slows them alike (the median during training is kept in the JSON too);
- the papers' information analysis per module: linear-probe top-1 of each module's output and
  the error of a linear reconstruction of the image from it.

Results go to ``learning_quality.json`` (``summary``: one row per method and K; ``results``: every
run) and ``learning_quality.png`` in ``--out-dir``; each finished run is also saved in
``<out-dir>/runs/<method>_k<K>_s<seed>/result.json``, and a later invocation with the same
``--out-dir`` and the same settings (config, epochs, seed, data, batch, lr, options) takes it from
there instead of training it again: an interrupted sweep resumes, and a sweep can be extended by
more seeds or Ks later. At a K whose cuts the config does not give, every method is trained at the
same cuts, ``--strategy`` applied to the greedy model (``--cuts-per-method``: each method's own
model, so a method with larger auxiliary nets gets other module sizes). ``--jobs N`` trains N runs at once, each in its own process with one thread
(on a CPU machine: one run per core, which is faster than one run on all cores); their time column
is then each run's median during training, not the interleaved timing.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import os.path as osp
import re
import statistics
import sys
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402

from localvision.utils.atomic_io import AtomicLocalBackend  # noqa: E402
from localvision.utils.memory import format_bytes, measure_peak_memory  # noqa: E402
from localvision.utils.probes import linear_probe_top1, linear_recon_error  # noqa: E402


DEFAULT_CONFIG = 'configs/cls/cifar_resnet32_half_forms24_greedy_k4.py'
# InfoPro's (lambda1_first, lambda2_first, lambda1_last, lambda2_last) for ResNet-32 on CIFAR-10
INFOPRO_LAMBDAS = {2: (5, 1, 0, 0), 4: (6, 0, 1, 2), 8: (5, 0, 0, 2), 16: (5, 0.05, 0.2, 0.5)}


def infopro_lambdas(k: int, override: Optional[List[float]] = None) -> dict:
    """The published ResNet-32 lambdas for K; for another K, those of the nearest published K >= 4
    (their (first, last) schedules interpolate over any number of local modules; K=2's has one).
    ``override``: (lambda1_first, lambda2_first, lambda1_last, lambda2_last) for every K."""
    if override:
        l1a, l2a, l1b, l2b = override
        return dict(lambda_recon=(l1a, l1b), lambda_task=(l2a, l2b))
    key = k if k in INFOPRO_LAMBDAS else min((kk for kk in INFOPRO_LAMBDAS if kk >= 4), key=lambda kk: abs(kk - k))
    l1a, l2a, l1b, l2b = INFOPRO_LAMBDAS[key]
    return dict(lambda_recon=(l1a, l1b), lambda_task=(l2a, l2b))


def method_model_cfg(method: str, k: int, lambdas: Optional[List[float]] = None) -> Dict[str, Optional[dict]]:
    """``local_objective`` and ``context`` of a method name (see ``METHODS``); ``lambdas`` replace
    the published InfoPro lambdas (see :func:`infopro_lambdas`)."""
    greedy = dict(type='Greedy', head=dict(type='ConvFCHead'))
    if method in ('e2e', 'greedy'):
        return dict(local_objective=greedy, context=None)
    if method == 'dgl':
        return dict(local_objective=dict(type='DGL'), context=None)
    if method in ('infopro_softmax', 'infopro_contrast'):
        return dict(local_objective=dict(type='InfoPro', loss_mode=method.split('_')[1], **infopro_lambdas(k, lambdas)),
                    context=None)
    if method == 'auglocal':  # the papers' CIFAR setting: d=2 sampled later blocks, pyramidal depth, CE head
        return dict(local_objective=dict(type='AugLocal', depth=2, pyramid=0.5), context=None)
    if method == 'man_greedy':  # MAN on the greedy head (its paper's other base)
        return dict(local_objective=dict(type='MAN', momentum=0.995, base=greedy), context=None)
    if method in ('man_infopro', 'hpff_infopro'):  # on InfoPro (softmax), as in their papers
        infopro = dict(type='InfoPro', loss_mode='softmax', **infopro_lambdas(k, lambdas))
        if method == 'man_infopro':
            return dict(local_objective=dict(type='MAN', momentum=0.995, base=infopro), context=None)
        return dict(local_objective=dict(type='HPFF', base=infopro, independent=greedy), context=None)
    if method.startswith('contsup_'):
        variant = method.split('_', 1)[1].upper()
        ctx = dict(type='ContSup', variant=variant)
        if variant.startswith('RN'):
            ctx.update(variant=variant.replace('RN', 'Rn'), n=2)
        return dict(local_objective=greedy, context=ctx)
    raise SystemExit(f'error: --methods: {method!r} is unknown; allowed: {list(METHODS)}')


METHODS = ('e2e', 'greedy', 'dgl', 'infopro_softmax', 'infopro_contrast', 'contsup_e', 'contsup_r1', 'contsup_rn',
           'contsup_r1e', 'auglocal', 'man_greedy', 'man_infopro', 'hpff_infopro')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    p.add_argument('--methods', nargs='+', default=['e2e', 'greedy', 'dgl', 'infopro_softmax', 'infopro_contrast',
                                                    'contsup_e', 'contsup_r1', 'contsup_r1e'], choices=METHODS, metavar='METHOD',
                   help=f'methods to compare (e2e is always K=1); allowed: {", ".join(METHODS)}')
    p.add_argument('--ks', type=int, nargs='+', default=[4], help='numbers of modules of the local methods')
    p.add_argument('--strategy', default='balanced', choices=['equal', 'balanced'],
                   help="split for a K the config's explicit cuts do not give (default: %(default)s)")
    p.add_argument('--cuts-per-method', action='store_true',
                   help="at a K the config's cuts do not give, split each method's own model by --strategy "
                        "(default: every method gets the cuts of the greedy model, so module sizes match)")
    p.add_argument('--epochs', type=int, default=15)
    p.add_argument('--train-per-class', type=int, default=375,
                   help='training images per class, the first N of each class (0: all; default: %(default)s)')
    p.add_argument('--data-root', default=None, help="an ImageFolder root (default: the config's)")
    p.add_argument('--batch-size', type=int, default=None, help="default: the config's")
    p.add_argument('--workers', type=int, default=1, help='data loader workers (default: %(default)s)')
    p.add_argument('--lr', type=float, default=None, help="default: the config's")
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                   help='seeds; every method and K is trained once per seed, the table gives mean and std '
                        '(default: %(default)s)')
    p.add_argument('--seed', type=int, dest='seed_one', default=None, help=argparse.SUPPRESS)  # older spelling
    p.add_argument('--infopro-lambdas', type=float, nargs=4, default=None, metavar=('L1_FIRST', 'L2_FIRST', 'L1_LAST', 'L2_LAST'),
                   help="InfoPro's reconstruction (lambda1) and task (lambda2) weights of the first and the last "
                        "local module, for every K (default: the published ResNet-32 values of each K)")
    p.add_argument('--no-probes', action='store_true',
                   help='skip the per-module linear probes (label top-1, image reconstruction error)')
    p.add_argument('--saved-only', action='store_true',
                   help='train nothing: the table of the runs already saved in --out-dir (a sweep in progress)')
    p.add_argument('--timing-rounds', type=int, default=5,
                   help='interleaved timing rounds after training (default: %(default)s)')
    p.add_argument('--jobs', type=int, default=1,
                   help='runs trained at once, each in its own process with one thread (CPU; e.g. 2 on a 2-core '
                        'machine); the time column is then each run\'s median during training (default: %(default)s)')
    p.add_argument('--out-dir', default=None, help='default: work_dirs/learning_quality')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the --jobs processes
    if args.seed_one is not None:
        args.seeds = [args.seed_one]
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f'--seeds: {args.seeds} repeats a seed')
    if args.jobs < 1:
        p.error(f'--jobs: {args.jobs} must be >= 1')
    return args


class IterTimes(Hook):
    """Seconds of every ``train_step`` and the loss it logged."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.times: List[float] = []
        self.losses: List[float] = []
        self._t0 = 0.0

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t0)
        if outputs and 'loss' in outputs:
            self.losses.append(float(outputs['loss']))


class EpochAccuracy(Hook):
    """Validation top-1 after every epoch (the final and the best of a run)."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.top1: List[float] = []

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.top1.append(float((metrics or {}).get('accuracy/top1', float('nan'))))


@torch.no_grad()
def train_top1(model, loader) -> float:
    """Top-1 (%) of the trained model on the training split (eval mode, the training pipeline's
    augmentation): whether the budget fits the set."""
    model.eval()
    right = seen = 0
    for batch in loader:
        for sample in model.val_step(batch):
            right += int(sample.pred_label.item() == sample.gt_label.item())
            seen += 1
    model.train()
    return 100.0 * right / max(seen, 1)


def balanced_indices(dataset_cfg: dict, per_class: int) -> List[int]:
    """Indices of the first ``per_class`` samples of every class of a dataset config."""
    from mmpretrain.registry import DATASETS
    ds = DATASETS.build(dict(dataset_cfg, pipeline=[]))
    taken: Dict[int, int] = defaultdict(int)
    out = []
    for i in range(len(ds)):
        label = int(ds.get_data_info(i)['gt_label'])
        if taken[label] < per_class:
            taken[label] += 1
            out.append(i)
    return out


def run_cfg(base: Config, method: str, k: int, args, work_dir: str, seed: int = 0) -> Config:
    """The config of one method at K: the base recipe with the method's objective and context."""
    cfg = copy.deepcopy(base)
    model = cfg.model
    split = model.setdefault('split', {})
    if not config_cuts(base, k):
        split['num_modules'] = k
        split['strategy'] = args.strategy
        split['cuts'] = None if args.cuts_per_method or method == 'e2e' else shared_cuts(base, k, args)
    parts = method_model_cfg(method, k, args.infopro_lambdas)
    model['local_objective'] = parts['local_objective']
    model['context'] = parts['context']
    e = args.epochs
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=e, val_interval=1)  # every epoch: final and best
    warm = 1 if e > 1 else 0
    cfg.param_scheduler = ([dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=warm,
                                 convert_to_iter_based=True)] if warm else []) + [
        dict(type='CosineAnnealingLR', T_max=e - warm, by_epoch=True, begin=warm, end=e, convert_to_iter_based=True)]
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10 ** 6)
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    cfg.visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
    return cfg


_SHARED_CUTS: Dict[Tuple[int, int], Tuple[Config, List[int]]] = {}  # (id(base), K): (base, cuts)


def config_cuts(base: Optional[Config], k: int) -> bool:
    """Whether the config's own cuts split the backbone into K modules."""
    cuts = (base.model.get('split') or {}).get('cuts') if base is not None else None
    return cuts is not None and len(cuts) + 1 == k


def shared_cuts(base: Config, k: int, args) -> List[int]:
    """The cuts every method gets at K when the config does not give them: ``--strategy`` applied
    to the greedy model (a balanced split of each method's own model would give each method other
    module sizes, and the table would compare those too)."""
    key = (id(base), k)
    if key not in _SHARED_CUTS or _SHARED_CUTS[key][0] is not base:
        from mmengine.registry import MODELS
        cfg = copy.deepcopy(base)
        split = cfg.model.setdefault('split', {})
        split.update(cuts=None, num_modules=k, strategy=args.strategy)
        parts = method_model_cfg('greedy', k, args.infopro_lambdas)
        cfg.model.update(local_objective=parts['local_objective'], context=parts['context'])
        _SHARED_CUTS[key] = (base, list(MODELS.build(cfg.model).backbone.cuts))
    return _SHARED_CUTS[key][1]


def run_cuts(result: dict) -> Optional[List[int]]:
    """The cuts a saved run was trained with (``cuts``, or read from its split description)."""
    if 'cuts' in result:
        return list(result['cuts'])
    m = re.search(r'at cuts \[([^\]]*)\]', result.get('split', ''))
    return [int(c) for c in m.group(1).split(',') if c.strip()] if m else None


def prepare_base(args) -> Config:
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    for name in ('train_dataloader', 'val_dataloader'):
        dl = cfg[name]
        if args.data_root:
            dl.dataset.data_root = args.data_root
        dl.num_workers = args.workers
        dl.persistent_workers = args.workers > 0
        if args.batch_size and name == 'train_dataloader':
            dl.batch_size = args.batch_size
    cfg.test_dataloader = cfg.val_dataloader
    if args.lr is not None:
        cfg.optim_wrapper.optimizer.lr = args.lr
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if cfg.get('custom_imports'):
        import importlib
        for m in cfg.custom_imports['imports']:
            importlib.import_module(m)
    if args.data_root and 'model.head.num_classes' not in (args.cfg_options or {}):
        prefix = cfg.train_dataloader.dataset.get('data_prefix', '')
        prefix = prefix.get('img_path', '') if isinstance(prefix, dict) else prefix
        train_dir = osp.join(args.data_root, prefix)
        if not osp.isdir(train_dir):
            raise SystemExit(f'error: --data-root: {train_dir} is not a folder (ImageFolder layout: '
                             '<root>/train/<class>/<image>, <root>/val/<class>/<image>)')
        cfg.model.head.num_classes = len([d for d in os.listdir(train_dir) if osp.isdir(osp.join(train_dir, d))])
    if args.train_per_class:
        cfg.train_dataloader.dataset.indices = balanced_indices(cfg.train_dataloader.dataset.to_dict(),
                                                                args.train_per_class)
    return cfg


@torch.no_grad()
def module_features(model, loader, max_images: int) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each module's output pooled to a 2x2 grid (flattened), the labels, and the image in [0, 1]
    pooled to 8x8, for up to ``max_images`` images of ``loader`` (eval mode, the modules in a row)."""
    import torch.nn.functional as F
    model.eval()
    feats: List[List[torch.Tensor]] = [[] for _ in range(model.num_units)]
    labels, images, seen = [], [], 0
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        ctx = model.make_context(data['inputs'], data['data_samples'])
        for k, fmap in enumerate(model.module_outputs(ctx.inputs)):
            feats[k].append(F.adaptive_avg_pool2d(fmap.float(), 2).flatten(1).cpu())
        labels.append(ctx.targets.cpu() if ctx.targets.dim() == 1 else ctx.targets.argmax(1).cpu())
        images.append(F.adaptive_avg_pool2d(ctx.image01(), 8).flatten(1).cpu())
        seen += len(labels[-1])
        if seen >= max_images:
            break
    return [torch.cat(f)[:max_images] for f in feats], torch.cat(labels)[:max_images], torch.cat(images)[:max_images]


def module_probes(runner, max_images: int = 2000) -> List[dict]:
    """The papers' information analysis, with linear estimators: for each module's output, the
    top-1 of a linear probe (how much of the label it keeps) and the error of a linear
    reconstruction of the image (how much of the input it keeps), fit on training images and
    measured on the validation split."""
    model = runner.model
    x_tr, y_tr, img_tr = module_features(model, runner.train_dataloader, max_images)
    x_va, y_va, img_va = module_features(model, runner.val_dataloader, max_images)
    num_classes = int(max(y_tr.max(), y_va.max())) + 1
    return [dict(module=k, probe_top1=linear_probe_top1(x_tr[k], y_tr, x_va[k], y_va, num_classes),
                 recon_mse=linear_recon_error(x_tr[k], img_tr, x_va[k], img_va)) for k in range(len(x_tr))]


def train_and_measure(cfg: Config, probes: bool = True) -> Tuple[dict, Callable[[], None]]:
    """Train, validate, measure the peak memory of one more iteration; return the results and
    that iteration as a function (for the interleaved timing)."""
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    timer, curve = IterTimes(), EpochAccuracy()
    runner.register_hook(timer)
    runner.register_hook(curve)
    t0 = time.perf_counter()
    runner.train()  # validates after every epoch
    train_s = time.perf_counter() - t0
    final = curve.top1[-1] if curve.top1 else float(runner.val().get('accuracy/top1', float('nan')))
    fit = train_top1(runner.model, runner.train_dataloader)
    module_stats = module_probes(runner) if probes else None
    model, ow = runner.model, runner.optim_wrapper
    device = next(model.parameters()).device
    batch = next(iter(runner.train_dataloader))

    def one_iter():
        model.train_step(copy.deepcopy(batch), ow)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    model.train()
    one_iter()
    peak = measure_peak_memory(one_iter, device=device, baseline=(model, ow.optimizer))
    iters_per_epoch = len(runner.train_dataloader)
    last = timer.losses[-iters_per_epoch:]
    result = dict(accuracy=final, best_accuracy=max(curve.top1 or [final]), val_curve=curve.top1,
                  train_top1=fit, peak_bytes=int(peak),
                  train_sec_per_iter=statistics.median(timer.times), train_seconds=train_s,
                  iters=len(timer.times), final_train_loss=sum(last) / max(len(last), 1),
                  train_images=len(runner.train_dataloader.dataset), val_images=len(runner.val_dataloader.dataset),
                  split=model.backbone.describe(), cuts=list(model.backbone.cuts), params=sum(p.numel() for p in model.parameters()),
                  probes=module_stats)
    return result, one_iter


def run_settings(args, seed: int, method: str) -> dict:
    """What a saved run must have been trained with to be taken instead of training it again."""
    lambdas = args.infopro_lambdas if 'infopro' in method else None
    return dict(config=args.config, epochs=args.epochs, seed=seed, train_per_class=args.train_per_class,
                data_root=args.data_root, batch_size=args.batch_size, lr=args.lr, strategy=args.strategy,
                cuts='per-method' if args.cuts_per_method else 'shared', infopro_lambdas=lambdas,
                cfg_options={k: str(v) for k, v in (args.cfg_options or {}).items()})


def run_path(out_dir: str, method: str, k: int, seed: int) -> str:
    return osp.join(out_dir, 'runs', f'{method}_k{k}_s{seed}', 'result.json')


def saved_result(args, out_dir: str, method: str, k: int, seed: int, base: Optional[Config] = None
                 ) -> Optional[dict]:
    """The saved result of a run trained with the same settings (and, with shared cuts, at the
    same cuts), or None."""
    path = run_path(out_dir, method, k, seed)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        r = json.load(f)
    settings = dict(r.get('settings') or {})
    if 'cuts' not in settings:  # saved before the cuts were shared (each method split its own model)
        same = (k == 1 or args.cuts_per_method or config_cuts(base, k) or  # else judged by the cuts it has
                (base is not None and run_cuts(r) == shared_cuts(base, k, args)))
        settings['cuts'] = run_settings(args, seed, method)['cuts'] if same else 'per-method'
    return r if settings == run_settings(args, seed, method) and 'best_accuracy' in r else None


def train_one(args, base: Config, out_dir: str, method: str, k: int, seed: int) -> Tuple[dict, Callable[[], None]]:
    """Train one run, save its ``result.json`` (atomically) and return it with its iteration."""
    saved = run_path(out_dir, method, k, seed)
    cfg = run_cfg(base, method, k, args, osp.dirname(saved), seed)
    t0 = time.perf_counter()
    r, one_iter = train_and_measure(cfg, probes=not args.no_probes)
    r.update(method=method, k=k, epochs=args.epochs, seed=seed, settings=run_settings(args, seed, method),
             sec_per_iter=r['train_sec_per_iter'])  # replaced by the interleaved timing, if any
    AtomicLocalBackend().put_text(json.dumps(r, indent=2), saved)  # never half-written
    print(f"[{method}_k{k}_s{seed}] top-1 {r['accuracy']:.2f}% (best {r['best_accuracy']:.2f}, train "
          f"{r['train_top1']:.1f})  peak {format_bytes(r['peak_bytes'])}  {r['train_sec_per_iter']:.3f} s/iter while "
          f"training  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return r, one_iter


def _process_job(argv: List[str], out_dir: str, method: str, k: int, seed: int) -> None:
    """One run in a worker process of ``--jobs`` (one thread)."""
    torch.set_num_threads(1)
    args = parse_args(argv)
    logging.getLogger('mmengine').setLevel(logging.WARNING)
    train_one(args, prepare_base(args), out_dir, method, k, seed)


def train_in_processes(args, out_dir: str, pending: List[Tuple[str, int, int]]) -> None:
    """``--jobs`` processes train the pending runs (in the table's order); each saves its result."""
    if not pending:
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    os.environ['OMP_NUM_THREADS'] = '1'  # the workers' thread pools (read when they import torch)
    print(f'training {len(pending)} run(s) in {min(args.jobs, len(pending))} processes, one thread each', flush=True)
    pool = ProcessPoolExecutor(max_workers=min(args.jobs, len(pending)), mp_context=mp.get_context('spawn'))
    try:
        futures = [pool.submit(_process_job, args.argv, out_dir, *job) for job in pending]
        for (method, k, seed), fut in zip(pending, futures):
            exc = fut.exception()
            if exc is not None:
                raise SystemExit(f'error: run {method}_k{k}_s{seed} failed: {type(exc).__name__}: {exc} '
                                 '(the runs finished so far are saved; run again without --jobs to see the traceback)')
    except KeyboardInterrupt:
        raise SystemExit(f'interrupted: the runs finished so far are saved in {out_dir}/runs; the same command '
                         'trains only the others') from None
    finally:  # stop the runs still going (an error or an interrupt): do not wait for them
        processes = list((getattr(pool, '_processes', None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            if proc.is_alive():
                proc.terminate()


def run(argv=None) -> List[dict]:
    args = parse_args(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')  # where the Runner trains
    base = prepare_base(args)
    out_dir = args.out_dir or osp.join('work_dirs', 'learning_quality')
    os.makedirs(out_dir, exist_ok=True)
    jobs = []
    for seed in args.seeds:  # seed by seed: a sweep stopped early still has whole tables
        for method in args.methods:
            for k in ([1] if method == 'e2e' else args.ks):
                jobs.append((method, k, seed))
    n_train = len(base.train_dataloader.dataset.get('indices') or []) or None
    print(f'{len(jobs)} runs of {args.epochs} epoch(s) on {base.train_dataloader.dataset.data_root} '
          f'({n_train or "all"} training images, batch {base.train_dataloader.batch_size}), device {device}',
          flush=True)
    logging.getLogger('mmengine').setLevel(logging.WARNING)
    if args.jobs > 1 and not args.saved_only:  # train the missing runs in parallel processes, then read them
        pending = [job for job in jobs if saved_result(args, out_dir, *job, base=base) is None]
        train_in_processes(args, out_dir, pending)
    results, iters = [], []
    for method, k, seed in jobs:
        name = f'{method}_k{k}_s{seed}'
        saved = run_path(out_dir, method, k, seed)
        r = saved_result(args, out_dir, method, k, seed, base=base)
        if r is not None:  # finished by an earlier invocation (or a --jobs process) with the same --out-dir
            results.append(r)
            iters.append(None)
            print(f"[{name}] top-1 {r['accuracy']:.2f}%  (saved in {saved})", flush=True)
            continue
        if args.saved_only:
            print(f'[{name}] not saved with these settings: left out (--saved-only)', flush=True)
            continue
        r, one_iter = train_one(args, base, out_dir, method, k, seed)
        results.append(r)
        iters.append(one_iter)
    times: List[List[float]] = [[] for _ in results]
    for _ in range(max(args.timing_rounds, 1)):  # interleaved: machine load hits every method alike
        for t, fn in zip(times, iters):
            if fn is None:
                continue
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    for r, t in zip(results, times):
        if t:  # runs resumed from a saved result keep the timing of their own invocation
            r['sec_per_iter'] = statistics.median(t)
            r['timed_with_all'] = True
        else:
            r['timed_with_all'] = False
    del iters
    meta = dict(config=args.config, data_root=base.train_dataloader.dataset.data_root, epochs=args.epochs,
                train_images=results[0]['train_images'] if results else n_train,
                val_images=results[0]['val_images'] if results else None,
                batch_size=base.train_dataloader.batch_size, seeds=args.seeds,
                timing_rounds=max(args.timing_rounds, 1),
                device=str(device), threads=torch.get_num_threads(), jobs=args.jobs, torch=torch.__version__,
                date=time.strftime('%Y-%m-%d %H:%M'),
                memory_metric='torch.cuda.max_memory_allocated' if device.type == 'cuda'
                else 'exact peak of live tensor storages (LiveTensorMemoryTracker)')
    summary = summarize(results)
    print_table(summary, meta)
    print_probes(summary)
    with open(osp.join(out_dir, 'learning_quality.json'), 'w') as f:
        json.dump(dict(meta=meta, summary=summary, results=results), f, indent=2)
    plot(summary, meta, osp.join(out_dir, 'learning_quality.png'))
    print(f'wrote {out_dir}/learning_quality.json and learning_quality.png')
    return results


def _mean_std(values: List[float]) -> Tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: List[dict]) -> List[dict]:
    """One row per method and K over its seeds: mean and std of the final and the best validation
    top-1, the mean training top-1, memory, time and per-module probes."""
    groups: Dict[Tuple[str, int], List[dict]] = {}
    for r in results:
        groups.setdefault((r['method'], r['k']), []).append(r)
    rows = []
    for (method, k), runs in groups.items():
        row = dict(method=method, k=k, seeds=[r['seed'] for r in runs], per_seed=[r['accuracy'] for r in runs])
        for key in ('accuracy', 'best_accuracy', 'train_top1'):
            row[key], row[key + '_std'] = _mean_std([r.get(key, r['accuracy']) for r in runs])
        for key in ('peak_bytes', 'sec_per_iter', 'final_train_loss'):
            row[key] = statistics.fmean(r[key] for r in runs)
        with_probes = [r['probes'] for r in runs if r.get('probes')]
        row['probes'] = [dict(module=m, probe_top1=statistics.fmean(p[m]['probe_top1'] for p in with_probes),
                              recon_mse=statistics.fmean(p[m]['recon_mse'] for p in with_probes))
                         for m in range(len(with_probes[0]))] if with_probes else None
        rows.append(row)
    return rows


def print_table(summary: List[dict], meta: dict) -> None:
    """Validation top-1 (mean ± std over the seeds, final and best epoch), training top-1, memory, time."""
    print(f"\n{osp.basename(meta['config'])} on {meta['data_root']}: {meta['epochs']} epoch(s), "
          f"{meta['train_images'] or 'all'} training / {meta['val_images']} validation images, "
          f"batch {meta['batch_size']}, seeds {meta['seeds']}, device {meta['device']}")
    e2e = next((r for r in summary if r['method'] == 'e2e'), None)
    head = (f"{'method':<18}{'K':>3}{'n':>3}{'top-1 % final':>16}{'best':>14}{'train':>7}{'peak memory':>14}{'vs E2E':>8}"
            f"{'s/iter':>9}{'vs E2E':>8}{'train loss':>12}")
    print(head)
    print('-' * len(head))
    for r in summary:
        mem = f"{r['peak_bytes'] / e2e['peak_bytes']:>7.0%}" if e2e else f"{'':>7}"
        t = f"{r['sec_per_iter'] / e2e['sec_per_iter']:>7.2f}x" if e2e else f"{'':>8}"
        one = len(r['seeds']) == 1  # no spread to show
        final = f"{r['accuracy']:.2f}" + ('' if one else f" ± {r['accuracy_std']:.2f}")
        best = f"{r['best_accuracy']:.2f}" + ('' if one else f" ± {r['best_accuracy_std']:.2f}")
        print(f"{r['method']:<18}{r['k']:>3}{len(r['seeds']):>3}{final:>16}{best:>14}{r['train_top1']:>7.1f}"
              f"{format_bytes(r['peak_bytes']):>14} {mem}{r['sec_per_iter']:>9.3f}{t}{r['final_train_loss']:>12.3f}")


def print_probes(summary: List[dict]) -> None:
    """Per module: linear-probe top-1 (%) / linear reconstruction MSE of its output (mean over seeds)."""
    rows = [r for r in summary if r.get('probes')]
    if not rows:
        return
    n = max(len(r['probes']) for r in rows)
    print('\nper module: linear-probe top-1 % / linear reconstruction MSE (8x8 image, x1000) of its output')
    head = f"{'method':<18}{'K':>3}" + ''.join(f'{f"M{k}":>13}' for k in range(n))
    print(head)
    print('-' * len(head))
    for r in rows:
        cells = ''.join(f"{p['probe_top1']:>7.1f}/{p['recon_mse'] * 1000:<5.1f}" for p in r['probes'])
        print(f"{r['method']:<18}{r['k']:>3}{cells}")


def plot(summary: List[dict], meta: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = [f"{r['method']}\nK={r['k']}" for r in summary]
    with_probes = [r for r in summary if r.get('probes')]
    fig, axes = plt.subplots(1, 5 if with_probes else 3, figsize=(25 if with_probes else 15, 4.5))
    series = ((axes[0], [r['accuracy'] for r in summary], [r['accuracy_std'] for r in summary],
               f"top-1 accuracy (%), mean ± std of {len(meta['seeds'])} seed(s)"),
              (axes[1], [r['peak_bytes'] / 2 ** 20 for r in summary], None, 'peak training memory (MiB)'),
              (axes[2], [r['sec_per_iter'] for r in summary], None, 'seconds / iteration'))
    colors = ['tab:gray' if r['method'] == 'e2e' else f"C{sorted({x['k'] for x in summary}).index(r['k'])}"
              for r in summary]
    for ax, vals, err, label in series:
        bars = ax.bar(range(len(vals)), vals, color=colors, yerr=err, capsize=3 if err else 0)
        for b, v in zip(bars, vals):
            ax.annotate(f'{v:.1f}' if v >= 1 else f'{v:.3f}', (b.get_x() + b.get_width() / 2, v), ha='center',
                        va='bottom', fontsize=7)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(names, rotation=45, ha='right', fontsize=7)
        ax.set_ylabel(label)
    for i, r in enumerate(summary):  # every seed as a dot
        axes[0].scatter([i] * len(r['per_seed']), r['per_seed'], color='k', s=6, zorder=3)
    if with_probes:  # the papers' information analysis: what each module's output keeps of y and of x
        for r in with_probes:
            depth = [(p['module'] + 1) / len(r['probes']) for p in r['probes']]
            label = f"{r['method']} K={r['k']}"
            axes[3].plot(depth, [p['probe_top1'] for p in r['probes']], marker='o', label=label)
            axes[4].plot(depth, [p['recon_mse'] for p in r['probes']], marker='o', label=label)
        axes[3].set_ylabel('linear-probe top-1 of module output (%)')
        axes[4].set_ylabel('linear reconstruction MSE of the image')
        for ax in axes[3:]:
            ax.set_xlabel('module end (fraction of the network)')
        axes[3].legend(fontsize=6)
    fig.suptitle(f"{osp.basename(meta['config'])}: {meta['epochs']} epoch(s), {meta['train_images'] or 'all'} "
                 f"training images, seeds {meta['seeds']}, {meta['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == '__main__':
    run()
