"""Peak training memory and time per iteration: end-to-end vs local learning, side by side.

    python tools/analysis/benchmark_memory.py CONFIG [--ks 1 2 4] [--batch-size 128]
        [--input-size 3 32 32] [--data synthetic|loader] [--iters 5] [--joint] [--checkpoint-ks [K ...]]
        [--channels-last-ks [K ...]]
        [--objectives AugLocal MAN HPFF]
        [--amp [--amp-dtype bfloat16|float16]] [--out-dir DIR] [--cfg-options k=v ...]

Classification (mmpretrain configs of ``localvision.cls.LocalImageClassifier``, default scope
``mmpretrain``), segmentation (mmseg ``LocalEncoderDecoder``) and detection (mmdet
``LocalSingleStageDetector`` / ``LocalTwoStageDetector``) configs. The batch is synthetic
(random uint8 images and labels of ``--input-size``) or, with ``--data loader``, the first batch
of the config's train dataloader (real images and labels, after its pipeline).

Every variant of the config (K=1 is end-to-end training through the same code path; with
``--checkpoint-ks`` also "E2E + ckpt" and "K=4 + ckpt": activation checkpointing of the backbone's
blocks and of InfoPro's decoders, ``model.backbone.grad_checkpointing=True``; with
``--channels-last-ks`` "E2E channels-last" and "K=4 channels-last", ``model.backbone.channels_last=True``)
is built in one process, trained for a warm-up iteration, then measured on the same batch:

- peak training memory of one iteration (forward, backward, optimizer step): on CUDA
  ``torch.cuda.max_memory_allocated``; on CPU the exact peak bytes of live tensors
  (parameters, gradients, optimizer state, activations), tracked per storage by
  :class:`localvision.utils.memory.LiveTensorMemoryTracker`;
- seconds per iteration, median over ``--iters`` rounds that interleave the variants (so drift
  of a noisy machine hits them alike), as wall-clock time and as this process's CPU time (which
  other processes on a shared machine disturb less).

``--amp`` trains every variant with mixed precision (``MixedPrecisionOptimWrapper``: bfloat16
autocast on the CPU, float16 with loss scaling on CUDA, or ``--amp-dtype``). To put fp32 and AMP
side by side, add a variant instead: ``--variant "K=4 bf16:model.split.num_modules=4,
optim_wrapper.type=MixedPrecisionOptimWrapper"``.

Prints a table and writes ``benchmark.json`` and ``benchmark.png`` into ``--out-dir``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import os.path as osp
import statistics
import sys
import time
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402

import localvision.engine  # noqa: E402,F401  (registers MixedPrecisionOptimWrapper)
from localvision.errors import InputError  # noqa: E402
from localvision.utils.config import model_config  # noqa: E402
from localvision.utils.memory import format_bytes, measure_peak_memory  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--ks', type=int, nargs='+', default=[1, 2, 4], help='numbers of modules to compare')
    p.add_argument('--strategy', default=None, choices=['equal', 'balanced'],
                   help='split strategy for K>1 (default: the config\'s, else balanced)')
    p.add_argument('--joint', action='store_true',
                   help='also run the largest K with JointBackward (sum of losses, one backward)')
    p.add_argument('--channels-last-ks', type=int, nargs='*', default=None, metavar='K',
                   help='also run these K with model.backbone.channels_last=True (channels-last backbone and '
                        'local-learning nets); without values: 1 and the largest of --ks')
    p.add_argument('--checkpoint-ks', type=int, nargs='*', default=None, metavar='K',
                   help='also run these K with activation checkpointing (backbone blocks and InfoPro decoders); '
                        'without values: 1 and the largest of --ks')
    p.add_argument('--amp', action='store_true',
                   help='mixed precision for every variant (bfloat16 on the CPU, float16 + loss scaling on CUDA)')
    p.add_argument('--amp-dtype', default=None, choices=['bfloat16', 'float16'],
                   help='the autocast type of --amp (default: by device)')
    p.add_argument('--variant', action='append', default=[], metavar='NAME:KEY=VAL[,KEY=VAL]',
                   help='an extra variant: config overrides of CONFIG, e.g. "dgl:model.local_objective.type=DGL" '
                        '(values may be tuples or lists: "thin:model.backbone.widths=(8,16,32)"), '
                        'or another config file, e.g. "infopro:configs/cls/cifar_resnet110_infopro_softmax_k4.py"')
    p.add_argument('--objectives', nargs='+', default=[], metavar='NAME',
                   help='also measure these registered objectives on later blocks (AugLocal, MAN, HPFF) at each K > 1, '
                        "on top of the config's objective where they take a base (e.g. MAN on InfoPro)")
    p.add_argument('--batch-size', type=int, default=None, help='default: the train dataloader\'s')
    p.add_argument('--input-size', type=int, nargs=3, default=None, metavar=('C', 'H', 'W'),
                   help='synthetic input size (default: model.split.input_size)')
    p.add_argument('--data', default='synthetic', choices=['synthetic', 'loader'],
                   help='synthetic batch of --input-size, or the first batch of the config\'s train dataloader')
    p.add_argument('--iters', type=int, default=5,
                   help='timed iterations per variant; 0: memory only, each model freed once measured '
                        '(for big models that do not fit in memory together)')
    p.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    p.add_argument('--out-dir', default=None)
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def _random_images(batch_size: int, input_size, g: torch.Generator) -> list:
    """uint8 images (C, H, W) as a data pipeline hands them to the data preprocessor."""
    return [torch.randint(0, 256, tuple(input_size), generator=g, dtype=torch.uint8) for _ in range(batch_size)]


def synthetic_cls_batch(batch_size: int, input_size, num_classes: int, seed: int = 0) -> dict:
    """A classification batch as mmpretrain's pipeline makes it (uint8 images, labelled
    ``mmpretrain.structures.DataSample``s)."""
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    inputs = _random_images(batch_size, input_size, g)
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(batch_size)]
    return dict(inputs=inputs, data_samples=samples)


def synthetic_seg_batch(batch_size: int, input_size, num_classes: int, seed: int = 0) -> dict:
    """A segmentation batch as mmseg's pipeline makes it (uint8 images, SegDataSamples with
    blocky label maps)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    h, w = input_size[-2:]
    inputs = _random_images(batch_size, input_size, g)
    samples = []
    for _ in range(batch_size):
        coarse = torch.randint(0, num_classes, (1, 1, max(h // 16, 1), max(w // 16, 1)), generator=g).float()
        label = torch.nn.functional.interpolate(coarse, size=(h, w), mode='nearest')[0].long()
        ds = SegDataSample()
        ds.gt_sem_seg = PixelData(data=label)
        ds.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


def synthetic_det_batch(batch_size: int, input_size, num_classes: int, seed: int = 0) -> dict:
    """A detection batch as mmdet's pipeline makes it (uint8 images, DetDataSamples with 3-8
    random boxes each)."""
    from mmengine.structures import InstanceData
    from mmdet.structures import DetDataSample
    g = torch.Generator().manual_seed(seed)
    h, w = input_size[-2:]
    inputs = _random_images(batch_size, input_size, g)
    samples = []
    for _ in range(batch_size):
        n = int(torch.randint(3, 9, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = (0.05 + torch.rand(n, 2, generator=g) * 0.3) * torch.tensor([w, h])
        gi = InstanceData()
        gi.bboxes = torch.cat([xy, (xy + wh).clamp(max=torch.tensor([w - 1.0, h - 1.0]))], dim=1)
        gi.labels = torch.randint(0, num_classes, (n,), generator=g)
        ds = DetDataSample()
        ds.gt_instances = gi
        ds.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1.0, 1.0)))
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


def det_num_classes(cfg: Config):
    """Number of classes of an mmdet detector config, or None when it is not one."""
    if 'bbox_head' in cfg.model:
        return cfg.model.bbox_head.num_classes
    if 'roi_head' in cfg.model:
        return cfg.model.roi_head.bbox_head.num_classes
    return None


def is_seg_config(cfg: Config) -> bool:
    return 'decode_head' in cfg.model


def cls_num_classes(cfg: Config) -> int:
    """Number of classes of a classifier config (``model.head.num_classes``)."""
    head = cfg.model.get('head') or {}
    num_classes = head.get('num_classes') or cfg.model.get('num_classes')
    if not num_classes:
        raise SystemExit('error: the config has no model.head.num_classes')
    return num_classes


def loader_batch(cfg: Config, batch_size: int) -> dict:
    """The first batch of the config's train dataloader (no workers)."""
    from mmengine.runner import Runner
    dl = copy.deepcopy(cfg.train_dataloader)
    dl.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    return next(iter(Runner.build_dataloader(dl, seed=0)))


def with_checkpointing(cfg: Config) -> Config:
    """``cfg`` with activation checkpointing of the backbone's blocks and of the decoders of its
    InfoPro objectives (the other objectives' auxiliary nets are small)."""
    from localvision.models.objectives.infopro import InfoProBase
    from localvision.registry import OBJECTIVES
    c = copy.deepcopy(cfg)
    c.model.backbone['grad_checkpointing'] = True
    objectives = c.model.get('local_objective') or []
    for obj in objectives if isinstance(objectives, (list, tuple)) else [objectives]:
        cls = OBJECTIVES.get(obj.get('type'))
        if isinstance(cls, type) and issubclass(cls, InfoProBase):
            obj['grad_checkpointing'] = True
    return c


def objective_on(name: str, current) -> dict:
    """``model.local_objective`` for objective ``name``: built on the config's objective (its
    ``base``) where ``name`` takes one and the config's objective is a single plain one."""
    from localvision.models.objectives.base import objective_class, registered_objectives, takes_blocks
    cls = objective_class(name) if name in registered_objectives() else None  # (fills the registry)
    if cls is None:
        raise SystemExit(f'error: --objectives: {name!r} is not a registered local objective; allowed: '
                         f'{registered_objectives()}')
    obj = dict(type=name)
    plain = isinstance(current, dict) and not takes_blocks(current.get('type'))
    if 'base' in getattr(cls, 'nested_objectives', ()) and plain:
        obj['base'] = copy.deepcopy(dict(current))
    return obj


def variant_cfgs(cfg: Config, args) -> Dict[str, Config]:
    out = {}
    ckpt_ks, cl_ks = args.checkpoint_ks, args.channels_last_ks
    if ckpt_ks is not None and not ckpt_ks:
        ckpt_ks = sorted({1, max(args.ks)})
    if cl_ks is not None and not cl_ks:
        cl_ks = sorted({1, max(args.ks)})
    for k in sorted(set(args.ks) | set(ckpt_ks or ()) | set(cl_ks or ())):
        c = copy.deepcopy(cfg)
        split = c.model.setdefault('split', {})
        explicit = split.get('cuts') is not None and len(split['cuts']) + 1 == k
        if not explicit:
            split['cuts'] = None
            split['num_modules'] = k
            split['strategy'] = args.strategy or split.get('strategy', 'balanced')
        name = 'E2E' if k == 1 else f'K={k}'
        if k in args.ks:
            out[name] = c
        if ckpt_ks and k in ckpt_ks:
            out[f'{name} + ckpt'] = with_checkpointing(c)
        if cl_ks and k in cl_ks:
            cl = copy.deepcopy(c)
            cl.model.backbone['channels_last'] = True
            out[f'{name} channels-last'] = cl
    for obj in args.objectives:
        for k in (k for k in sorted(args.ks) if k > 1):
            c = copy.deepcopy(out[f'K={k}'])
            c.model.local_objective = objective_on(obj, c.model.get('local_objective'))
            out[f'K={k} {obj}'] = c
    if args.joint:
        k = max(args.ks)
        c = copy.deepcopy(out['E2E' if k == 1 else f'K={k}'])
        c.model.executor = dict(type='JointBackward')
        out[f'K={k} joint-backward'] = c
    for spec in args.variant:
        name, _, overrides = spec.partition(':')
        if overrides.endswith('.py'):  # a sibling config (another objective / context)
            if not osp.isfile(overrides):
                raise SystemExit(f'error: --variant {spec}: config file {overrides} does not exist')
            c = Config.fromfile(overrides)
            if args.cfg_options:
                c.merge_from_dict(args.cfg_options)
            if cfg.model.get('split') is not None and c.model.get('split') is not None:
                c.model.split['input_size'] = cfg.model.split.get('input_size')
            out[name] = c
            continue
        c = copy.deepcopy(cfg)
        opts = {}
        for kv in split_overrides(overrides):
            key, _, val = kv.partition('=')
            opts[key] = DictAction._parse_iterable(val)
        c.merge_from_dict(opts)
        out[name] = c
    return out


def split_overrides(text: str) -> List[str]:
    """``KEY=VAL`` items of a ``--variant`` separated by the commas outside brackets and quotes, so
    that a value may be a tuple or list: ``model.backbone.widths=(8,16,32),model.split.num_modules=4``."""
    items, depth, quote, start = [], 0, '', 0
    for i, ch in enumerate(text):
        if quote:
            quote = '' if ch == quote else quote
        elif ch in '\'"':
            quote = ch
        elif ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        elif ch == ',' and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item]


def move_optimizer_state(optimizer: torch.optim.Optimizer, src: str, dst) -> None:
    """Move the optimizer's state tensors on device type ``src`` to ``dst`` (``Module.to`` leaves
    them where they are). Scalars kept on the CPU on purpose (Adam's ``step``) stay there."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.device.type == src and value.dim() > 0:
                state[key] = value.to(dst)


def run(argv=None) -> List[dict]:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'localvision'))
    if cfg.get('custom_imports'):
        import importlib
        for m in cfg.custom_imports['imports']:
            importlib.import_module(m)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    batch_size = args.batch_size or cfg.train_dataloader.batch_size
    if args.data == 'loader':
        try:
            batch = loader_batch(cfg, batch_size)
        except InputError as e:
            raise SystemExit(f'error: {e}') from None
        input_size = args.input_size or tuple(batch['inputs'][0].shape)
    else:
        input_size = args.input_size or cfg.model.get('split', {}).get('input_size')
    if input_size is None:
        raise SystemExit('error: give --input-size C H W (the config has no model.split.input_size)')
    if cfg.model.get('split') is not None:
        cfg.model.split['input_size'] = tuple(input_size)
    if args.data == 'synthetic':
        pre = cfg.model.get('data_preprocessor') or {}
        if pre.get('size') is not None:  # mmseg pads every image to the training crop: measure the size asked for
            pre['size'] = tuple(input_size[-2:])
        if det_num_classes(cfg) is not None:
            batch = synthetic_det_batch(batch_size, input_size, det_num_classes(cfg))
        elif is_seg_config(cfg):
            batch = synthetic_seg_batch(batch_size, input_size, cfg.model.decode_head.num_classes)
        else:
            batch = synthetic_cls_batch(batch_size, input_size, cls_num_classes(cfg))

    if args.amp:
        # scoped: found from any default scope (mmpretrain, mmseg, mmdet, localvision)
        cfg.optim_wrapper.type = 'localvision.MixedPrecisionOptimWrapper'
        if args.amp_dtype:
            cfg.optim_wrapper.dtype = args.amp_dtype
    variants = variant_cfgs(cfg, args)
    backbone = (cfg.model.get('backbone') or {}).get('model_name')
    meta = dict(config=args.config, backbone=backbone, device=str(device), batch_size=batch_size,
                input_size=list(input_size), data=args.data,
                iters=args.iters, amp=args.amp, torch=torch.__version__, threads=torch.get_num_threads(),
                memory_metric='torch.cuda.max_memory_allocated' if device.type == 'cuda'
                else 'exact peak of live tensor storages (LiveTensorMemoryTracker)')
    out_dir = args.out_dir or osp.join('work_dirs', 'benchmarks', osp.splitext(osp.basename(args.config))[0])
    os.makedirs(out_dir, exist_ok=True)
    built = {}
    results = []

    def write_json(name: str) -> None:
        with open(osp.join(out_dir, name), 'w') as f:
            json.dump(dict(meta=meta, results=results), f, indent=2)
    for name, vcfg in variants.items():
        torch.manual_seed(0)
        try:
            model = MODELS.build(model_config(vcfg))
            model.to(device).train()
            ow = build_optim_wrapper(model, vcfg.optim_wrapper)
            model.train_step(copy.deepcopy(batch), ow)  # warm-up: optimizer state exists from now on
        except (InputError, TypeError, ValueError) as e:  # a bad option of the variant: one line, not a traceback
            kept = f' (measured so far: {out_dir}/benchmark_partial.json)' if results else ''
            raise SystemExit(f'error: variant {name!r}: {e}{kept}') from None
        desc = model.backbone.describe() if hasattr(model, 'backbone') and hasattr(model.backbone, 'describe') else ''

        def one_iter(model=model, ow=ow):
            model.train_step(copy.deepcopy(batch), ow)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)

        peak = measure_peak_memory(one_iter, device=device, baseline=(model, ow.optimizer))
        params = sum(p.numel() for p in model.parameters())
        results.append(dict(name=name, k=getattr(model, 'num_units', 1), peak_bytes=int(peak), split=desc,
                            executor=type(model.executor).__name__, params=params, times=[], cpu_times=[],
                            grad_checkpointing=bool(getattr(getattr(model, 'backbone', None), 'grad_checkpointing',
                                                            False)),
                            channels_last=bool(getattr(getattr(model, 'backbone', None), 'channels_last', False)),
                            precision=str(getattr(ow, 'cast_dtype', None) or 'float32').replace('torch.', '')))
        if args.iters > 0:
            built[name] = (one_iter, model, ow.optimizer)
            if device.type == 'cuda':  # off the device, optimizer state too: the next variant's peak
                model.cpu()            # must not count this one's
                move_optimizer_state(ow.optimizer, 'cuda', 'cpu')
        else:
            del one_iter, model, ow
        print(f'[{name}] peak {format_bytes(peak)}  {desc}', flush=True)
        write_json('benchmark_partial.json')  # kept if a later variant fails

    if device.type == 'cuda':
        for _, model, optimizer in built.values():
            model.to(device)
            move_optimizer_state(optimizer, 'cpu', device)
    for _ in range(args.iters):  # interleaved rounds
        for r in results:
            fn = built[r['name']][0]
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            r['times'].append(time.perf_counter() - t0)
            r['cpu_times'].append(time.process_time() - c0)
    base = results[0]
    for r in results:
        r['memory_ratio'] = r['peak_bytes'] / base['peak_bytes']
        if args.iters > 0:
            r['sec_per_iter'] = statistics.median(r['times'])
            r['cpu_sec_per_iter'] = statistics.median(r['cpu_times'])
            r['time_ratio'] = r['sec_per_iter'] / statistics.median(base['times'])
            r['cpu_time_ratio'] = r['cpu_sec_per_iter'] / statistics.median(base['cpu_times'])

    print_table(results, meta)
    write_json('benchmark.json')
    plot(results, meta, osp.join(out_dir, 'benchmark.png'))
    if osp.exists(osp.join(out_dir, 'benchmark_partial.json')):
        os.remove(osp.join(out_dir, 'benchmark_partial.json'))
    print(f'wrote {out_dir}/benchmark.json and benchmark.png')
    return results


def print_table(results: List[dict], meta: dict) -> None:
    print(f"\n{meta['config']}  device={meta['device']}  batch={meta['batch_size']}  "
          f"input={'x'.join(map(str, meta['input_size']))}  precision={results[0]['precision']}  "
          f"memory: {meta['memory_metric']}")
    head = (f"{'variant':<24}{'K':>3}{'peak memory':>14}{'vs E2E':>9}{'s/iter':>10}{'vs E2E':>9}"
            f"{'cpu s/iter':>12}{'vs E2E':>9}")
    print(head)
    print('-' * len(head))
    for r in results:
        line = f"{r['name']:<24}{r['k']:>3}{format_bytes(r['peak_bytes']):>14}{r['memory_ratio']:>8.1%}"
        if 'sec_per_iter' in r:
            line += (f"{r['sec_per_iter']:>10.3f}{r['time_ratio']:>8.2f}x{r['cpu_sec_per_iter']:>12.3f}"
                     f"{r['cpu_time_ratio']:>8.2f}x")
        else:
            line += f"{'-':>10}{'-':>9}{'-':>12}{'-':>9}"
        print(line)


def plot(results: List[dict], meta: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    timed = all('sec_per_iter' in r for r in results)
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(10 if timed else 6, 4), squeeze=False)
    axes = axes[0]
    names = [r['name'] for r in results]
    panels = [(axes[0], [r['peak_bytes'] / 2**20 for r in results], 'peak training memory (MiB)')]
    if timed:
        panels.append((axes[1], [r['sec_per_iter'] for r in results], 'seconds / iteration'))
    for ax, vals, label in panels:
        bars = ax.bar(names, vals, color=['tab:gray'] + ['tab:blue'] * (len(names) - 1))
        for b, r, v in zip(bars, results, vals):
            ratio = r['memory_ratio'] if 'memory' in label else r['time_ratio']
            ax.annotate(f'{ratio:.0%}' if 'memory' in label else f'{ratio:.2f}x', (b.get_x() + b.get_width() / 2, v),
                        ha='center', va='bottom', fontsize=8)
        ax.set_ylabel(label)
        ax.tick_params(axis='x', rotation=30)
    model = f" ({meta['backbone']})" if meta.get('backbone') else ''
    fig.suptitle(f"{osp.basename(meta['config'])}{model} on {meta['device']}, batch {meta['batch_size']}, "
                 f"input {'x'.join(map(str, meta['input_size']))}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == '__main__':
    run()
