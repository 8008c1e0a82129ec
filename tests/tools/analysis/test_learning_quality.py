"""The learning-quality tool on a tiny generated set: trains each method, writes table, JSON, PNG."""
import json
import os.path as osp
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import learning_quality  # noqa: E402


def test_learning_quality_trains_every_method_and_writes_results(tiny_cls_root, tmp_path, capsys):
    results = learning_quality.run(['--methods', 'e2e', 'infopro_contrast', 'contsup_r1e', 'auglocal', 'man_infopro',
                                    'hpff_infopro', '--ks', '2',
                                    '--epochs', '1', '--train-per-class', '4', '--data-root', tiny_cls_root,
                                    '--batch-size', '8', '--workers', '0', '--out-dir', str(tmp_path),
                                    '--cfg-options', 'model.backbone.model_name=cifar_resnet20'])
    out = capsys.readouterr().out
    assert 'top-1 %' in out and 'contsup_r1e' in out
    data = json.loads((tmp_path / 'learning_quality.json').read_text())
    assert (tmp_path / 'learning_quality.png').stat().st_size > 10_000
    assert [(r['method'], r['k']) for r in data['results']] == [('e2e', 1), ('infopro_contrast', 2),
                                                                ('contsup_r1e', 2), ('auglocal', 2),
                                                                ('man_infopro', 2), ('hpff_infopro', 2)]
    assert data['meta']['train_images'] == 16  # 4 per class, 4 classes
    for r in results:
        assert 0.0 <= r['accuracy'] <= 100.0 and r['peak_bytes'] > 0 and r['sec_per_iter'] > 0
        assert r['iters'] == 2  # 16 images, batch 8, one epoch
        # the per-module information analysis: one linear probe / reconstruction per module
        assert [p['module'] for p in r['probes']] == list(range(r['k']))
        assert all(0 <= p['probe_top1'] <= 100 and p['recon_mse'] > 0 for p in r['probes'])
    assert 'linear-probe top-1' in out
    assert results[1]['peak_bytes'] < results[0]['peak_bytes']  # K=2 keeps one module's graph at a time
    # a second invocation with the same --out-dir resumes from the saved runs instead of training again
    again = learning_quality.run(['--methods', 'e2e', 'infopro_contrast', '--ks', '2', '--epochs', '1',
                                  '--train-per-class', '4', '--data-root', tiny_cls_root, '--batch-size', '8',
                                  '--workers', '0', '--out-dir', str(tmp_path),
                                  '--cfg-options', 'model.backbone.model_name=cifar_resnet20'])
    assert 'saved in' in capsys.readouterr().out
    assert [r['accuracy'] for r in again] == [r['accuracy'] for r in results[:2]]


def test_unknown_method_is_refused():
    import pytest
    with pytest.raises(SystemExit):
        learning_quality.parse_args(['--methods', 'greedyy'])
