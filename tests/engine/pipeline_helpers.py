"""Shared by tests/engine/test_pipeline*.py: tiny configs, gloo workers, the single-process reference."""
import os
import os.path as osp
import socket
import subprocess
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE = osp.join(ROOT, 'configs/cls/cifar_resnet32_shapes_greedy_k4.py')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def write_config(path, data_root, cuts=(2, 5, 8), pipeline="dict(schedule='sync', micro_batches=4, queue_size=2)",
                 batch_size=16, epochs=1, extra='', model_extra='', augment=True):
    pipeline_line = f'pipeline = {pipeline}' if pipeline else ''
    aug = '' if augment else ", pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]"
    path.write_text(f"""_base_ = ['{BASE}']
data_root = '{data_root}'
train_dataloader = dict(batch_size={batch_size}, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root{aug}))
val_dataloader = dict(batch_size=16, num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
model = dict(head=dict(num_classes=4), backbone=dict(model_name='cifar_resnet20'), split=dict(cuts={list(cuts)}){model_extra})
optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = []
train_cfg = dict(max_epochs={epochs}, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
{pipeline_line}
{extra}
""")
    return str(path)


def pretend_one_gpu() -> None:
    """In a training process: torch reports one CUDA device (availability, count, current device,
    CUDA RNG state) while the stage computes on the CPU. Every rank then takes the CUDA-only branches
    of a machine whose GPU all ranks share (``LOCAL_RANK`` 1 with one GPU), up to the device moves,
    which a CPU otherwise never runs."""
    from localvision.engine.pipeline import runner as pipeline_runner
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    torch.cuda.set_device = lambda device: None
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_rng_state = lambda device='cuda': torch.get_rng_state()
    torch.cuda.set_rng_state = lambda state, device='cuda': None
    torch.cuda.manual_seed_all = lambda seed: None
    init = pipeline_runner.PipelineRunner.__init__

    def init_on_cpu(self, *args, **kwargs):
        init(self, *args, **kwargs)
        assert self.device == torch.device('cuda', 0), f'rank {self.rank} chose {self.device}'
        self.device = torch.device('cpu')
    pipeline_runner.PipelineRunner.__init__ = init_on_cpu


def _worker(rank, world, port, config, work_dir, options):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))  # as torchrun on one machine
    torch.set_num_threads(1)
    if os.environ.get('LV_TEST_PRETEND_ONE_GPU') == '1':
        pretend_one_gpu()
    if torch.cuda.is_available():  # compared with a CPU reference: full fp32 (no TF32 convolutions or matmuls)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    from localvision.engine.pipeline import train_pipeline
    from localvision.utils.config import load_config
    cfg = load_config(config, options or None, work_dir, launcher='pytorch')
    cfg.pipeline['val_at_end'] = False
    train_pipeline(cfg)


def spawn(config, work_dir, world, options=None):
    """Run the pipeline on ``world`` gloo processes (torch.multiprocessing)."""
    import torch.multiprocessing as mp
    mp.spawn(_worker, args=(world, free_port(), config, work_dir, options), nprocs=world, join=True)


def torchrun(config, nproc, *args, timeout=240, env_extra=None):
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable, **(env_extra or {}))
    return subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, str(nproc), *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def load_state(path):
    from localvision.utils import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def reference_run(config, micro_batches, iters, replicas=1, options=None, accumulate=None):
    """The single-process PerModuleBackward run on the same data and micro-batches: gradients
    accumulated over the micro-batches (of every replica), one optimizer step per global batch
    (or per ``accumulate`` micro-batches)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each stage: the same float order (the results are then bit-identical)
    try:
        return _reference(config, micro_batches, iters, replicas, options, accumulate)
    finally:
        torch.set_num_threads(threads)


def _reference(config, micro_batches, iters, replicas, options, accumulate):
    import copy

    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed

    from localvision.engine.pipeline import build_model, build_train_loader, split_micro
    from localvision.utils.config import load_config
    from localvision.utils.setup_env import register_all_modules
    cfg = load_config(config, options or None)
    register_all_modules(init_default_scope=False)
    init_default_scope(cfg.get('default_scope', 'localvision'))  # as each stage (PipelineRunner.setup)
    set_random_seed(0)
    model = build_model(cfg)
    model.train()
    loaders = [build_train_loader(cfg, r, replicas, 0) for r in range(replicas)]
    iters_ = [None] * replicas
    ow_cfg = copy.deepcopy(cfg.optim_wrapper)
    ow_cfg['accumulative_counts'] = accumulate or micro_batches * replicas
    ow = build_optim_wrapper(model, ow_cfg)
    ow.initialize_count_status(model, 0, iters * micro_batches * replicas)
    ipe = len(loaders[0])
    for it in range(iters):
        for r, loader in enumerate(loaders):
            if it % ipe == 0:
                loader.sampler.set_epoch(it // ipe)
                iters_[r] = iter(loader)
            data = model.data_preprocessor(next(iters_[r]), True)
            for micro in split_micro(data, micro_batches):
                ctx = model.make_context(micro['inputs'], micro['data_samples'])
                model.executor(model, ctx, ow)
    return model


# -- auxiliary heads for the tests (configs pull them in with custom_imports=['pipeline_helpers']) --
def _register_test_heads():
    import time

    from localvision.models.objectives.aux_heads import PoolLinearHead
    from localvision.registry import AUX_HEADS

    @AUX_HEADS.register_module(force=True)
    class TestSlowHead(PoolLinearHead):
        """A module made slow on purpose (sleeps in every forward)."""

        def __init__(self, in_channels, num_classes, delay=0.03):
            super().__init__(in_channels, num_classes)
            self.delay = delay

        def forward(self, x):
            time.sleep(self.delay)
            return super().forward(x)

    @AUX_HEADS.register_module(force=True)
    class TestFailingHead(PoolLinearHead):
        """Raises on its ``fail_at``-th training forward (and writes the time to ``stamp``)."""

        def __init__(self, in_channels, num_classes, fail_at=3, stamp='', die=False):
            super().__init__(in_channels, num_classes)
            self.fail_at, self.stamp, self.die, self.calls = fail_at, stamp, die, 0

        def forward(self, x):
            self.calls += 1
            if self.calls == self.fail_at:
                if self.stamp:
                    with open(self.stamp, 'w') as f:
                        f.write(str(time.time()))
                if self.die:
                    os._exit(9)  # dies without a word
                raise RuntimeError('the auxiliary head of module 1 broke on purpose')
            return super().forward(x)


_register_test_heads()


def check_trained_like_reference(config, work, iters, micro_batches, moved, counted):
    """The export of a sync pipeline run in ``work`` equals the single-process reference; the
    ``moved`` weights changed from their initial values; the BatchNorm ``counted`` saw every
    micro-batch. Returns the path of the export."""
    import json
    exported = osp.join(work, f'iter_{iters}.pth')
    assert osp.isfile(exported)
    ref = reference_run(config, micro_batches=micro_batches, iters=iters)
    state, ref_state = load_state(exported), ref.state_dict()
    assert set(state) == set(ref_state)
    for k, v in ref_state.items():
        torch.testing.assert_close(state[k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f'{k}: {m}')
    init = reference_run(config, micro_batches=micro_batches, iters=0).state_dict()
    for k in moved:
        assert not torch.equal(state[k], init[k]), k
    for k in counted:
        assert int(state[k]) == iters * micro_batches, k
    summary = json.load(open(osp.join(work, 'pipeline_logs', f'summary_rank{ref.num_units - 1}.json')))
    assert summary['iters'] == iters and summary['micro_batches'] == micro_batches
    return exported
