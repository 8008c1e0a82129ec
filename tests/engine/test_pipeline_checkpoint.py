"""Checkpoint / resume of the whole pipeline (sync schedule) and export to one checkpoint file.

A run saves one file per module plus a manifest every 2 iterations; runs resumed from a
mid-epoch checkpoint and from an epoch-boundary one (random crops and flips: the data order and
the augmentation RNG must be restored too) end with exactly the parameters of the uninterrupted
run, validation during training included. The export is the ordinary single-file checkpoint that
tools/test.py evaluates.
"""
import json
import os
import os.path as osp
import re
import sys

import pytest
import torch

from pipeline_helpers import ROOT, load_state, spawn, torchrun, write_config

sys.path.insert(0, osp.join(ROOT, 'tools'))
import test as test_tool  # noqa: E402  (tools/test.py)

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`


@pytest.fixture(scope='module')
def uninterrupted(tiny_cls_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('pipe_ckpt')
    cfg = write_config(tmp / 'cfg.py', tiny_cls_root, cuts=(5,), epochs=2,
                       extra="default_hooks = dict(logger=dict(interval=1), "
                             "checkpoint=dict(by_epoch=False, interval=2, max_keep_ckpts=-1, save_best='auto'))")
    work = str(tmp / 'a')
    spawn(cfg, work, 2)
    return cfg, work


def test_checkpoint_layout_and_export(uninterrupted, tmp_path):
    cfg, work = uninterrupted
    root = osp.join(work, 'pipeline_ckpt')
    assert sorted(os.listdir(root)) == ['best.json', 'iter_2', 'iter_4', 'iter_6', 'iter_8', 'last']
    assert sorted(os.listdir(osp.join(root, 'iter_4'))) == ['manifest.json', 'stage0.pth', 'stage1.pth']
    assert not [f for d, _, fs in os.walk(work) for f in fs if f.endswith('.tmp')]
    manifest = json.load(open(osp.join(root, 'iter_4', 'manifest.json')))
    assert (manifest['iteration'], manifest['epoch'], manifest['num_stages'], manifest['cuts']) == (4, 1, 2, [5])
    assert open(osp.join(root, 'last')).read().endswith('iter_8/manifest.json')
    from localvision.engine.pipeline.checkpoint import load_torch
    stage_keys = [set(load_torch(osp.join(root, 'iter_4', f'stage{k}.pth'))['state_dict']) for k in range(2)]
    assert not stage_keys[0] & stage_keys[1] and stage_keys[0] | stage_keys[1] == set(manifest['keys'])
    assert any(k.startswith('objectives.0.') for k in stage_keys[0])
    assert any(k.startswith('head.fc.') for k in stage_keys[1])  # the mmpretrain head, trained by the last stage
    # the command-line export of an intermediate checkpoint; tools/test.py evaluates the final export
    out = str(tmp_path / 'iter4.pth')
    from localvision.engine.pipeline.checkpoint import main as export_main
    export_main([osp.join(root, 'iter_4'), out])
    assert set(load_state(out)) == set(manifest['keys'])
    metrics = test_tool.main([cfg, osp.join(work, 'epoch_2.pth'), '--work-dir', str(tmp_path / 't')])
    assert 0 <= metrics['accuracy/top1'] <= 100
    # validation during training (val_interval=1: after epoch 1 = iteration 4) evaluated the
    # weights of that iteration exactly as tools/test.py does on their export
    val = [json.loads(line) for line in open(osp.join(work, 'pipeline_logs', 'val.jsonl'))]
    assert [r['iter'] for r in val] == [4]
    at4 = test_tool.main([cfg, out, '--work-dir', str(tmp_path / 't4')])
    assert val[0]['accuracy/top1'] == pytest.approx(at4['accuracy/top1'])


def test_save_best_keeps_the_export_of_the_best_validation(uninterrupted):
    """save_best='auto' (the first metric, accuracy/top1; mmengine's names): the one validation
    during training (iteration 4; the final one is left to the export) is the best so far, so its
    checkpoint is exported as best_accuracy_top1_iter_4.pth, with its score in the record."""
    cfg, work = uninterrupted
    assert sorted(f for f in os.listdir(work) if f.startswith('best_')) == ['best_accuracy_top1_iter_4.pth']
    best = load_state(osp.join(work, 'best_accuracy_top1_iter_4.pth'))
    from localvision.engine.pipeline.checkpoint import merged_state_dict
    at4 = merged_state_dict(osp.join(work, 'pipeline_ckpt', 'iter_4', 'manifest.json'))
    assert list(best) == list(at4) and all(torch.equal(best[k], at4[k]) for k in at4)
    val = json.loads(open(osp.join(work, 'pipeline_logs', 'val.jsonl')).readline())
    record = json.load(open(osp.join(work, 'pipeline_ckpt', 'best.json')))['improvements']
    assert record == {'accuracy/top1': [dict(iter=4, score=val['accuracy/top1'],
                                             path=osp.join(work, 'best_accuracy_top1_iter_4.pth'))]}


def test_validation_builds_the_model_as_the_runner_does(uninterrupted, tmp_path):
    """The model validation during training evaluates (the merged stage files of iteration 8)
    scores every image exactly as the model mmengine's Runner builds from the config (what
    tools/test.py evaluates) with the export: the data preprocessor that mmpretrain configs keep
    at the top level (the shapes mean / std, BGR to RGB) included, not a default one."""
    import copy

    from mmengine.runner import Runner, load_checkpoint

    from localvision.engine.pipeline.validation import StageValidator
    from localvision.utils.config import load_config
    cfg_path, work = uninterrupted
    cfg = load_config(cfg_path, work_dir=str(tmp_path / 'runner'))
    c = copy.deepcopy(cfg)
    c.pop('pipeline', None)
    c.train_dataloader = c.train_cfg = c.optim_wrapper = c.param_scheduler = None
    runner = Runner.from_cfg(c)
    load_checkpoint(runner.model, osp.join(work, 'epoch_2.pth'), map_location='cpu')
    runner.model.eval()
    assert runner.model.data_preprocessor.mean.flatten().tolist() == [127.5] * 3
    validator = StageValidator(cfg, work, str(tmp_path), torch.device('cpu'), seed=0, total_iters=8,
                               check_abort=lambda: None)
    ours = validator.build_model(osp.join(work, 'pipeline_ckpt', 'iter_8', 'manifest.json'))
    batch = next(iter(Runner.build_dataloader(copy.deepcopy(cfg.val_dataloader))))
    with torch.no_grad():
        expected = [s.pred_score for s in runner.model.val_step(copy.deepcopy(batch))]
        got = [s.pred_score for s in ours.val_step(copy.deepcopy(batch))]
    assert len(got) == len(expected) == 16
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize('resume_at', [2, 4], ids=['mid-epoch', 'epoch-boundary'])
def test_resume_equals_uninterrupted(uninterrupted, tmp_path, resume_at):
    cfg, work = uninterrupted
    manifest = osp.join(work, 'pipeline_ckpt', f'iter_{resume_at}', 'manifest.json')
    resumed = str(tmp_path / 'b')
    spawn(cfg, resumed, 2, options={'resume': True, 'load_from': manifest})
    log = [json.loads(line) for line in open(osp.join(resumed, 'pipeline_logs', 'stage1_replica0.jsonl'))]
    assert [r['iter'] for r in log] == list(range(resume_at + 1, 9))  # continued, not restarted
    a, b = load_state(osp.join(work, 'epoch_2.pth')), load_state(osp.join(resumed, 'epoch_2.pth'))
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=lambda m: f'{k}: {m}')
    # save_best: resumed before the validation of iteration 4, the run validates it and keeps the same best
    # file; resumed after it, the run continues from the uninterrupted run's best (its record up to 4)
    record = json.load(open(osp.join(resumed, 'pipeline_ckpt', 'best.json')))['improvements']
    kept = [f for f in os.listdir(resumed) if f.startswith('best_')]
    if resume_at < 4:
        assert kept == ['best_accuracy_top1_iter_4.pth']
        ours, theirs = (load_state(osp.join(d, 'best_accuracy_top1_iter_4.pth')) for d in (resumed, work))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
        assert record['accuracy/top1'][0]['path'] == osp.join(resumed, 'best_accuracy_top1_iter_4.pth')
    else:
        assert kept == []
        assert record['accuracy/top1'][0]['path'] == osp.join(work, 'best_accuracy_top1_iter_4.pth')


def test_resuming_a_checkpoint_of_another_model_is_one_error_line(uninterrupted, tmp_path):
    """The same K and cuts, another number of classes: a stage whose weights do not fit stops the
    run before training, with one line."""
    cfg, work = uninterrupted
    manifest = osp.join(work, 'pipeline_ckpt', 'iter_2', 'manifest.json')
    r = torchrun(cfg, 2, '--work-dir', str(tmp_path / 'b'), '--resume', manifest,
                 '--cfg-options', 'model.head.num_classes=5', timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    errors = [line for line in out.splitlines() if line.startswith('error:')]
    folder = osp.join(work, 'pipeline_ckpt', 'iter_2')
    assert len(errors) == 1 and re.fullmatch(  # the auxiliary classifier of module 0 and the head differ
        rf'error: stage \d .* failed: InputError: checkpoint {re.escape(folder)}/stage\d.pth does not fit the model of '
        r'the config: 2 weights of another shape \(e.g. (objectives.0.head.fc2|head.fc).weight\); use the config it '
        r'was trained with', errors[0]), out[-3000:]
    assert not os.path.exists(tmp_path / 'b' / 'pipeline_ckpt' / 'iter_4')
