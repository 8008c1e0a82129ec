"""Train a model from a config (classification, segmentation or detection), OpenMMLab style.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--cfg-options key=value ...] [--launcher none|pytorch|slurm]
"""
import argparse
import os
import os.path as osp
import sys

import _stack_check  # noqa: F401  (first: one clear line without the stack)

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout too

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402
from mmengine.runner import Runner, find_latest_checkpoint  # noqa: E402

from localvision.engine.interrupt import StopAtIterationHook, StopOnSignal, TrainingInterrupted  # noqa: E402
from localvision.errors import InputError  # noqa: E402
from localvision.utils import allow_mmengine_checkpoints, check_checkpoint, check_fits, read_state_dict  # noqa: E402
from localvision.utils.config import check_param_schedulers, load_config  # noqa: E402
from localvision.utils.data_check import check_data  # noqa: E402
from localvision.utils.device import check_processes_fit_gpus, finish_dist, init_dist_without_cuda  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a localvision model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one in the work '
                             'dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision: float16 with loss scaling on CUDA, bfloat16 on the CPU')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.backbone.model_name=resnet50d')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torchrun passes LOCAL_RANK as an environment variable; older launchers as an argument
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args) -> Config:
    """The config as this command line asks for it (shared with tools/test.py's habits)."""
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        import torch
        opt_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if opt_type in ('AmpOptimWrapper', 'MixedPrecisionOptimWrapper'):
            print('AMP training is already enabled in your config.')
        elif torch.cuda.is_available():
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        else:  # mmengine's AmpOptimWrapper needs CUDA; localvision.engine's runs bfloat16 autocast on the CPU
            cfg.optim_wrapper.type = 'MixedPrecisionOptimWrapper'
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if cfg.get('load_from') and not (cfg.get('pipeline') and cfg.get('resume')):  # a pipeline resumes from a manifest
        check_checkpoint(cfg.load_from)
    return cfg


def stopped(runner, done: int, why: str) -> None:
    """End an interrupted run: save the ``done`` iterations that finished (``--resume`` continues
    right after them), say so, exit with 130."""
    name = f'iter_{done}_interrupted.pth'
    # the epoch in progress (LocalEpochBasedTrainLoop skips its batches already trained on resume)
    runner.save_checkpoint(runner.work_dir, name, meta=dict(epoch=runner.epoch, iter=done),
                           save_optimizer=True, save_param_scheduler=True)
    with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(runner.work_dir, name))
    runner.logger.warning(f'interrupted ({why}) after iteration {done}: saved {name}; continue with --resume')
    finish_dist()
    raise SystemExit(130)


def check_resume_fits(runner, cfg: Config) -> None:
    """A resumed run continues every weight, the auxiliary nets included: the checkpoint it resumes
    (``--resume CKPT``, or the latest in the work dir) must fit the config's model exactly."""
    if not cfg.get('resume'):
        return
    path = cfg.get('load_from') or find_latest_checkpoint(runner.work_dir)
    if path:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        check_fits(model, read_state_dict(path)[1], path, ignore=())


def train(cfg: Config):
    """Build the runner from ``cfg`` and train; bad input ends in one ``error:`` line."""
    runner = None
    if cfg.get('pipeline') is not None:  # module-parallel: one process per module (and replica)
        from localvision.engine.pipeline import train_pipeline
        try:
            return train_pipeline(cfg)
        except InputError as e:
            raise SystemExit(f'error: {e}' if os.environ.get('RANK', '0') == '0' else 1) from None
    with StopOnSignal(announce=os.environ.get('RANK', '0') == '0') as signals:
        try:
            check_processes_fit_gpus(cfg.launcher)
            init_dist_without_cuda(cfg.launcher, cfg.env_cfg.dist_cfg.backend)
            if 'runner_type' in cfg:
                from mmengine.registry import RUNNERS
                runner = RUNNERS.build(cfg)
            else:
                runner = Runner.from_cfg(cfg)
            check_resume_fits(runner, cfg)
            runner.register_hook(StopAtIterationHook(signals))
            # data sets are built (and checked) when training starts
            runner.train()
        except TrainingInterrupted as e:  # raised after an iteration, before the loop counted it
            stopped(runner, runner.iter + 1, e.signal)
        except (RuntimeError, EOFError, ConnectionError) as e:
            if runner is None or not signals.data_loader_stopped(e):
                raise
            stopped(runner, runner.iter, signals.requested)  # waiting for the next batch
        except KeyboardInterrupt:  # a second Ctrl-C
            raise SystemExit('stopped at once (second Ctrl-C): nothing saved since the last checkpoint') from None
        except InputError as e:
            raise SystemExit(f'error: {e}') from None
    final = {k[len('val/'):]: v.current() for k, v in runner.message_hub.log_scalars.items()
             if k.startswith('val/') and not k.endswith('time')}
    if final:
        runner.logger.info('final validation metrics: ' + ', '.join(f'{k}: {v:.2f}' for k, v in final.items()))
    finish_dist()
    return runner


def main(argv=None):
    args = parse_args(argv)
    allow_mmengine_checkpoints()
    try:
        cfg = build_cfg(args)
        check_param_schedulers(cfg)
        check_data(cfg, 'train')  # before any process group or model is made
    except InputError as e:
        raise SystemExit(f'error: {e}') from None
    return train(cfg)


if __name__ == '__main__':
    main()
