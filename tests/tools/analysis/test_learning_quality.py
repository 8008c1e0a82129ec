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
    results = learning_quality.run(['--methods', 'e2e', 'infopro_contrast', 'contsup_r1e', 'auglocal', 'man_greedy',
                                    'man_infopro', 'hpff_infopro', '--ks', '2',
                                    '--epochs', '1', '--train-per-class', '4', '--data-root', tiny_cls_root,
                                    '--batch-size', '8', '--workers', '0', '--out-dir', str(tmp_path), '--seeds', '0',
                                    '--cfg-options', 'model.backbone.model_name=cifar_resnet20'])
    out = capsys.readouterr().out
    assert 'top-1 %' in out and 'contsup_r1e' in out
    data = json.loads((tmp_path / 'learning_quality.json').read_text())
    assert (tmp_path / 'learning_quality.png').stat().st_size > 10_000
    assert [(r['method'], r['k']) for r in data['results']] == [('e2e', 1), ('infopro_contrast', 2),
                                                                ('contsup_r1e', 2), ('auglocal', 2), ('man_greedy', 2),
                                                                ('man_infopro', 2), ('hpff_infopro', 2)]
    assert data['meta']['train_images'] == 16  # 4 per class, 4 classes
    for r in results:
        assert 0.0 <= r['accuracy'] <= 100.0 and r['peak_bytes'] > 0 and r['sec_per_iter'] > 0
        assert r['iters'] == 2  # 16 images, batch 8, one epoch
        assert len(r['val_curve']) == 1 and r['best_accuracy'] == r['accuracy'] == r['val_curve'][0]
        assert 0.0 <= r['train_top1'] <= 100.0
        # the per-module information analysis: one linear probe / reconstruction per module
        assert [p['module'] for p in r['probes']] == list(range(r['k']))
        assert all(0 <= p['probe_top1'] <= 100 and p['recon_mse'] > 0 for p in r['probes'])
    assert 'linear-probe top-1' in out
    assert results[1]['peak_bytes'] < results[0]['peak_bytes']  # K=2 keeps one module's graph at a time
    # a second invocation with the same --out-dir resumes from the saved runs instead of training again
    again = learning_quality.run(['--methods', 'e2e', 'infopro_contrast', '--ks', '2', '--epochs', '1',
                                  '--train-per-class', '4', '--data-root', tiny_cls_root, '--batch-size', '8',
                                  '--workers', '0', '--out-dir', str(tmp_path), '--seeds', '0',
                                  '--cfg-options', 'model.backbone.model_name=cifar_resnet20'])
    assert 'saved in' in capsys.readouterr().out
    assert [r['accuracy'] for r in again] == [r['accuracy'] for r in results[:2]]


def test_learning_quality_seeds_give_mean_and_std(tiny_cls_root, tmp_path, capsys):
    args = ['--methods', 'e2e', 'infopro_softmax', '--ks', '2', '--epochs', '2', '--train-per-class', '4',
            '--data-root', tiny_cls_root, '--batch-size', '8', '--workers', '0', '--no-probes', '--timing-rounds', '1',
            '--out-dir', str(tmp_path), '--cfg-options', 'model.backbone.model_name=cifar_resnet20']
    results = learning_quality.run(args + ['--seeds', '0', '1', '--infopro-lambdas', '1', '1', '0', '0'])
    assert [(r['method'], r['seed']) for r in results] == [('e2e', 0), ('infopro_softmax', 0), ('e2e', 1),
                                                           ('infopro_softmax', 1)]
    assert (tmp_path / 'runs' / 'infopro_softmax_k2_s1' / 'result.json').is_file()
    for r in results:
        assert len(r['val_curve']) == 2 and r['best_accuracy'] == max(r['val_curve'])
        assert r['accuracy'] == r['val_curve'][-1]
    data = json.loads((tmp_path / 'learning_quality.json').read_text())
    assert data['meta']['seeds'] == [0, 1]
    rows = {r['method']: r for r in data['summary']}
    e2e = [r['accuracy'] for r in results if r['method'] == 'e2e']
    assert rows['e2e']['per_seed'] == e2e
    assert rows['e2e']['accuracy'] == pytest.approx(sum(e2e) / 2)
    assert rows['e2e']['accuracy_std'] == pytest.approx(abs(e2e[0] - e2e[1]) / 2 ** 0.5)
    assert '±' in capsys.readouterr().out
    # a third seed extends the sweep: the first two are taken from the saved runs; other lambdas
    # retrain InfoPro but not E2E
    learning_quality.run(args + ['--seeds', '0', '1', '2', '--infopro-lambdas', '1', '1', '0', '0'])
    out = capsys.readouterr().out
    assert out.count('saved in') == 4 and '[e2e_k1_s2]' in out
    learning_quality.run(args + ['--seeds', '0'])
    out = capsys.readouterr().out
    assert '[e2e_k1_s0] top-1' in out and out.count('saved in') == 1
    # --saved-only: the table of what is saved, nothing trained
    saved = learning_quality.run(args + ['--seeds', '0', '1', '2', '3', '--saved-only'])
    out = capsys.readouterr().out
    assert '[e2e_k1_s3] not saved' in out and '[infopro_softmax_k2_s1] not saved' in out
    assert [(r['method'], r['seed']) for r in saved] == [('e2e', 0), ('infopro_softmax', 0), ('e2e', 1), ('e2e', 2)]


def test_repeated_seed_is_refused():
    with pytest.raises(SystemExit):
        learning_quality.parse_args(['--seeds', '0', '0'])


def test_unknown_method_is_refused():
    import pytest
    with pytest.raises(SystemExit):
        learning_quality.parse_args(['--methods', 'greedyy'])


def test_jobs_train_runs_in_parallel_processes_and_resume(tiny_cls_root, tmp_path, capsys):
    """``--jobs 2``: the runs are trained in two one-thread processes, saved, and read back in the
    table's order; a second invocation trains nothing."""
    argv = ['--methods', 'e2e', 'greedy', '--ks', '2', '--epochs', '1', '--train-per-class', '4',
            '--data-root', tiny_cls_root, '--batch-size', '8', '--workers', '0', '--out-dir', str(tmp_path),
            '--seeds', '0', '1', '--jobs', '2', '--no-probes', '--cfg-options', 'model.backbone.model_name=cifar_resnet20']
    results = learning_quality.run(argv)
    out = capsys.readouterr().out
    assert 'training 4 run(s) in 2 processes, one thread each' in out
    assert [(r['method'], r['k'], r['seed']) for r in results] == [('e2e', 1, 0), ('greedy', 2, 0), ('e2e', 1, 1),
                                                                   ('greedy', 2, 1)]
    assert all(r['iters'] == 2 and not r['timed_with_all'] and r['sec_per_iter'] == r['train_sec_per_iter']
               for r in results)
    data = json.loads((tmp_path / 'learning_quality.json').read_text())
    assert data['meta']['jobs'] == 2 and len(data['summary']) == 2
    again = learning_quality.run(argv)
    assert 'processes' not in capsys.readouterr().out  # nothing left to train
    assert [r['accuracy'] for r in again] == [r['accuracy'] for r in results]


def test_every_method_is_trained_at_the_same_cuts(tiny_cls_root):
    """At a K the config does not split, every method gets the greedy model's balanced cuts (a balanced
    split of each method's own model would differ with its auxiliary nets); ``--cuts-per-method``
    splits each method's own model."""
    from mmengine.registry import MODELS
    argv = ['--data-root', tiny_cls_root, '--workers', '0', '--train-per-class', '4',
            '--cfg-options', 'model.backbone.model_name=cifar_resnet32']

    def cuts(method, args):
        return list(MODELS.build(learning_quality.run_cfg(base, method, 8, args, '').model).backbone.cuts)
    args = learning_quality.parse_args(argv)
    base = learning_quality.prepare_base(args)
    methods = ('greedy', 'dgl', 'infopro_softmax', 'contsup_r1e', 'auglocal', 'man_infopro')
    shared = {m: cuts(m, args) for m in methods}
    assert len(shared['greedy']) == 7 and all(c == shared['greedy'] for c in shared.values())
    own = learning_quality.parse_args(argv + ['--cuts-per-method'])
    assert cuts('greedy', own) == shared['greedy'] and cuts('auglocal', own) != shared['greedy']
