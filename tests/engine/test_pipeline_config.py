"""Pipeline settings that cannot work are rejected before anything starts, with one clear line."""
import sys

import pytest
from mmengine.config import Config

from localvision.engine.pipeline import check_pipeline_cfg, parse_pipeline_cfg
from localvision.errors import InputError
from pipeline_helpers import ROOT, torchrun, write_config

sys.path.insert(0, f'{ROOT}/tools')
import train as train_tool  # noqa: E402  (tools/train.py)


def cfg_with(pipeline, batch_size=16, cuts=(2, 5, 8)):
    return Config(dict(pipeline=pipeline, train_dataloader=dict(batch_size=batch_size),
                       model=dict(split=dict(cuts=list(cuts)))))


@pytest.mark.parametrize('pipeline,match', [
    (dict(micro_batches=3), r'micro_batches=3 does not divide train_dataloader.batch_size=16'),
    (dict(micro_batches=32), r'micro_batches=32 does not divide'),
    (dict(micro_batches=0), r'micro_batches=0 is invalid'),
    (dict(queue_size=0), r'queue_size=0 is invalid'),
    (dict(queue_size=1.5), r'queue_size=1.5 is invalid'),
    (dict(schedule='gpipe'), r"schedule='gpipe' is unknown; allowed: \['sync', 'async'\]"),
    (dict(schedule='async', micro_batches=4, step_every=3), r'step_every=3 must divide pipeline.micro_batches=4'),
    (dict(schedule='sync', step_every=2), r'step_every=2 only applies to the async schedule'),
    (dict(replicas=0), r'replicas=0 is invalid'),
    (dict(follow_lag=-1), r'follow_lag=-1 is invalid: an integer >= 0'),
    (dict(follow_lag=1.0), r'follow_lag=1.0 is invalid'),
    (dict(micro_batch=4), r"unknown keys \['micro_batch'\]"),
])
def test_bad_settings_are_rejected(pipeline, match):
    with pytest.raises(InputError, match=match):
        check_pipeline_cfg(cfg_with(pipeline))


def test_process_count_must_be_k_times_replicas():
    with pytest.raises(InputError, match=r'K=4 modules x pipeline.replicas=2 needs 8 processes, got 4'):
        check_pipeline_cfg(cfg_with(dict(replicas=2)), world_size=4)
    assert check_pipeline_cfg(cfg_with(dict(replicas=2, micro_batches=4)), world_size=8).micro_batches == 4
    assert parse_pipeline_cfg(dict()).schedule == 'sync'


def test_single_process_launch_is_refused_with_the_command_to_use(tiny_cls_root, tmp_path, monkeypatch):
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root)
    with pytest.raises(SystemExit, match=r'^error: pipeline training runs one process per module .* '
                                         r'tools/dist_train.sh CONFIG 4'):
        train_tool.main([cfg, '--work-dir', str(tmp_path / 'work')])


@pytest.mark.slow  # starts torchrun's processes
def test_wrong_number_of_processes_fails_before_start_with_one_line(tiny_cls_root, tmp_path):
    cfg = write_config(tmp_path / 'cfg.py', tiny_cls_root)  # K=4
    r = torchrun(cfg, 2, '--work-dir', str(tmp_path / 'work'), timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    errors = [line for line in out.splitlines() if line.startswith('error:')]
    assert errors == ['error: pipeline training of K=4 modules x pipeline.replicas=1 needs 4 processes, got 2 '
                      '(launch: tools/dist_train.sh CONFIG 4)'], out[-2000:]
    assert 'localvision/engine' not in out  # no traceback of ours (torchrun prints its own summary)


def test_objectives_training_the_next_module_are_refused_with_module_parallel_training():
    """HPFF's cascade loss trains the next module too: its gradients would have to cross back to
    the next stage's process, so the run is refused before anything starts. MAN only reads the
    next module's weights (the next stage sends them back: test_pipeline_follow.py), and AugLocal
    copies later blocks: both are accepted."""
    import localvision.models  # noqa: F401  (registers the objectives, as a config's custom_imports do)
    cfg = cfg_with(dict(micro_batches=2))
    cfg.model.local_objective = dict(type='HPFF')
    with pytest.raises(InputError, match=r"\['HPFF'\] trains the next module too.*without `pipeline`"):
        check_pipeline_cfg(cfg)
    cfg.model.local_objective = dict(type='MAN', momentum=0.99)
    assert check_pipeline_cfg(cfg).follow_lag == 0
    cfg.model.local_objective = [dict(type='Greedy'), dict(type='AugLocal'), dict(type='Greedy')]
    assert check_pipeline_cfg(cfg).micro_batches == 2  # nothing crosses


def test_custom_hooks_other_than_peak_memory_are_refused():
    """Hooks act through one Runner holding the whole model: under pipeline training only
    PeakMemoryHook is honoured (each stage measures its own peak); any other is refused."""
    from localvision.engine.pipeline.config import peak_memory_iter
    cfg = cfg_with(dict(micro_batches=4))
    assert peak_memory_iter(cfg) is None
    cfg.custom_hooks = [dict(type='localvision.PeakMemoryHook', at_iter=3)]
    assert peak_memory_iter(cfg) == 3 and check_pipeline_cfg(cfg).micro_batches == 4
    cfg.custom_hooks = [dict(type='PeakMemoryHook')]
    assert peak_memory_iter(cfg) == 5  # the hook's default
    cfg.custom_hooks = [dict(type='PeakMemoryHook', at_iter=0)]
    with pytest.raises(InputError, match=r'PeakMemoryHook: PeakMemoryHook.at_iter=0 must be >= 1'):
        check_pipeline_cfg(cfg)
    cfg.custom_hooks = [dict(type='EMAHook', momentum=1e-4), dict(type='localvision.PeakMemoryHook')]
    with pytest.raises(InputError, match=r"custom_hooks \['EMAHook'\] do not run under pipeline training"):
        check_pipeline_cfg(cfg)


def test_auto_scale_lr_needs_its_base_batch_size():
    cfg = cfg_with(dict(micro_batches=4))
    cfg.auto_scale_lr = dict(enable=True)
    with pytest.raises(InputError, match=r'auto_scale_lr.enable=True needs auto_scale_lr.base_batch_size'):
        check_pipeline_cfg(cfg)
    cfg.auto_scale_lr = dict(enable=False)
    assert check_pipeline_cfg(cfg).micro_batches == 4


@pytest.mark.parametrize('checkpoint,match', [
    (dict(save_best='acc', rule='bigger'), r"default_hooks.checkpoint: rule must be greater, less or None, but got "
                                           r"bigger. \(save_best='acc', rule='bigger'\)"),
    (dict(save_best='fid'), r'default_hooks.checkpoint: Cannot infer the rule for key fid, thus a specific rule'),
    (dict(save_best=['acc', 'acc']), r'default_hooks.checkpoint: Find duplicate element in "save_best"'),
    (dict(interval=1, out_dir='/elsewhere', save_begin=2),
     r"default_hooks.checkpoint keys \['out_dir', 'save_begin'\] are not supported with pipeline training"),
])
def test_checkpoint_options_it_cannot_honour_are_refused(checkpoint, match):
    cfg = cfg_with(dict(micro_batches=4))
    cfg.default_hooks = dict(checkpoint=checkpoint)
    with pytest.raises(InputError, match=match):
        check_pipeline_cfg(cfg)


@pytest.mark.parametrize('checkpoint', [
    dict(type='CheckpointHook', interval=1, max_keep_ckpts=2, save_last=True, save_best='auto'),
    dict(by_epoch=False, interval=100, save_best='mIoU'),
    dict(save_best=['fid', 'accuracy/top1'], rule=['less', 'greater']),
])
def test_save_best_is_accepted(checkpoint):
    cfg = cfg_with(dict(micro_batches=4))
    cfg.default_hooks = dict(checkpoint=checkpoint)
    assert check_pipeline_cfg(cfg).micro_batches == 4


def test_samplers_the_pipeline_cannot_reproduce_are_refused():
    cfg = cfg_with(dict(micro_batches=4))
    for ok in ('DefaultSampler', 'InfiniteSampler', 'mmengine.InfiniteSampler'):
        cfg.train_dataloader.sampler = dict(type=ok, shuffle=True)
        assert check_pipeline_cfg(cfg).micro_batches == 4
    cfg.train_dataloader.sampler = dict(type='RepeatAugSampler', num_repeats=3)
    with pytest.raises(InputError, match=r"sampler.type='RepeatAugSampler' is not supported with pipeline training"):
        check_pipeline_cfg(cfg)
