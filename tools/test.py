"""Evaluate a trained model (plain backbone path, no auxiliary nets), OpenMMLab style.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
                         [--cfg-options key=value ...] [--launcher none|pytorch|slurm]
"""
import argparse
import os
import os.path as osp
import sys

import _stack_check  # noqa: F401  (first: one clear line without the stack)

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from localvision.errors import InputError  # noqa: E402
from localvision.utils import allow_mmengine_checkpoints, check_checkpoint, check_fits, read_state_dict  # noqa: E402
from localvision.utils.config import load_config  # noqa: E402
from localvision.utils.data_check import check_data  # noqa: E402
from localvision.utils.device import check_processes_fit_gpus, finish_dist, init_dist_without_cuda  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a localvision model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='dump the metrics to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    allow_mmengine_checkpoints()
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
        check_checkpoint(args.checkpoint)
        check_data(cfg, 'test')
        check_processes_fit_gpus(cfg.launcher)
        init_dist_without_cuda(cfg.launcher, cfg.env_cfg.dist_cfg.backend)
        cfg.load_from = args.checkpoint
        cfg.resume = False
        runner = Runner.from_cfg(cfg)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        check_fits(model, read_state_dict(args.checkpoint)[1], args.checkpoint)
        metrics = runner.test()
    except InputError as e:
        raise SystemExit(f'error: {e}') from None
    finish_dist()
    if args.out:
        import json
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump({k: float(v) if hasattr(v, '__float__') else v for k, v in metrics.items()}, f, indent=2)
    return metrics


if __name__ == '__main__':
    main()
