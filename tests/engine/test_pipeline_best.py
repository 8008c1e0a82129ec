"""``default_hooks.checkpoint.save_best`` under pipeline training (:mod:`localvision.engine.pipeline.best`):
mmengine's rules, file names and removal of the previous best, and the record a resume continues from.
The runs that save best checkpoints from real validations are in test_pipeline_checkpoint.py."""
import json
import os
import os.path as osp

import pytest
from mmengine.config import Config

from localvision.engine.pipeline.best import BestCheckpoint, record_of
from localvision.engine.pipeline.intervals import Intervals
from localvision.errors import InputError


def intervals(by_epoch=True, ipe=4):
    return Intervals(total_iters=5 * ipe, iters_per_epoch=ipe, by_epoch=by_epoch, checkpoint_every=ipe, log_every=1,
                     val_interval=1, val_begin=1, has_val=True)


def make(work, by_epoch=True, **checkpoint):
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(interval=1, **checkpoint))))
    return BestCheckpoint.from_cfg(cfg, str(work), intervals(by_epoch))


def saver(written):
    def save(path):
        written.append(path)
        with open(path, 'w') as f:
            f.write(path)
    return save


def test_without_save_best_there_is_nothing_to_keep(tmp_path):
    assert make(tmp_path) is None


def test_auto_takes_the_first_metric_and_keeps_one_file_per_improvement(tmp_path):
    best, written = make(tmp_path, save_best='auto'), []
    best.start(0)
    assert best.update(4, {'accuracy/top1': 50.0, 'accuracy/top5': 90.0}, saver(written)) \
        == [str(tmp_path / 'best_accuracy_top1_epoch_1.pth')]
    assert best.update(8, {'accuracy/top1': 40.0, 'accuracy/top5': 99.0}, saver(written)) == []  # worse: kept
    best.update(12, {'accuracy/top1': 60.0, 'accuracy/top5': 95.0}, saver(written))
    assert written == [str(tmp_path / f'best_accuracy_top1_epoch_{e}.pth') for e in (1, 3)]
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth')) == ['best_accuracy_top1_epoch_3.pth']
    record = json.load(open(tmp_path / 'pipeline_ckpt' / 'best.json'))['improvements']
    assert [(e['iter'], e['score']) for e in record['accuracy/top1']] == [(4, 50.0), (12, 60.0)]


def test_rules_as_mmengine_infers_or_is_told_them(tmp_path):
    written = []
    with pytest.raises(InputError, match='Cannot infer the rule for key fid'):
        make(tmp_path, save_best=['loss', 'fid'])
    best = make(tmp_path, by_epoch=False, save_best=['loss', 'mIoU'])
    best.start(0)
    best.update(100, {'loss': 2.0, 'mIoU': 30.0}, saver(written))
    best.update(200, {'loss': 1.0, 'mIoU': 20.0}, saver(written))  # loss: less is better; mIoU: greater
    assert [osp.basename(p) for p in written] == ['best_loss_iter_100.pth', 'best_mIoU_iter_100.pth',
                                                  'best_loss_iter_200.pth']
    told = make(tmp_path / 'b', by_epoch=False, save_best='fid', rule='less')
    told.start(0)
    told.update(100, {'fid': 9.0}, saver(written))
    assert told.update(200, {'fid': 10.0}, saver(written)) == []


def test_a_metric_validation_does_not_give_is_named_with_those_it_gives(tmp_path):
    best = make(tmp_path, save_best='mIoU')
    best.start(0)
    with pytest.raises(InputError, match=r"save_best='mIoU' is not among the validation metrics \['aAcc', 'mDice'\]"):
        best.update(4, {'mDice': 1.0, 'aAcc': 2.0}, saver([]))


def test_a_resume_continues_from_the_best_as_of_its_checkpoint(tmp_path):
    first, written = make(tmp_path / 'a', save_best='auto'), []
    first.start(0)
    for it, acc in [(4, 50.0), (8, 70.0), (12, 60.0), (16, 80.0)]:
        first.update(it, {'acc': acc}, saver(written))
    # resumed at iteration 12 in another work dir: the improvements up to 12 (iteration 8's 70)
    manifest = str(tmp_path / 'a' / 'pipeline_ckpt' / 'iter_12' / 'manifest.json')
    resumed = make(tmp_path / 'b', save_best='auto')
    resumed.start(12, source=record_of(manifest))
    assert resumed.best('acc')['iter'] == 8
    assert resumed.update(16, {'acc': 75.0}, saver(written)) == [str(tmp_path / 'b' / 'best_acc_epoch_4.pth')]
    assert osp.exists(tmp_path / 'a' / 'best_acc_epoch_4.pth')  # another work dir's files are left alone
    # a new run in the same work dir starts over; a record that cannot be read is named
    again = make(tmp_path / 'a', save_best='auto')
    again.start(0)
    assert again.best('acc') is None
    (tmp_path / 'a' / 'pipeline_ckpt' / 'best.json').write_text('{')
    with pytest.raises(InputError, match=r'the save_best record .*best.json is unreadable'):
        make(tmp_path / 'a', save_best='auto')
