"""The benchmark tool on a tiny model: files written, and per-module backward really saves memory."""
import json
import os.path as osp
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import benchmark_memory  # noqa: E402

CONFIG = osp.join(ROOT, 'configs/cls/cifar_resnet32_e2e.py')


def test_benchmark_writes_table_json_png_and_local_training_uses_less_memory(tmp_path, capsys):
    results = benchmark_memory.run([CONFIG, '--ks', '1', '2', '4', '--joint', '--batch-size', '16', '--iters', '1',
                                    '--out-dir', str(tmp_path), '--cfg-options',
                                    'model.backbone.model_name=cifar_resnet20'])
    out = capsys.readouterr().out
    assert 'peak memory' in out and 'K=4 joint-backward' in out
    data = json.loads((tmp_path / 'benchmark.json').read_text())
    assert (tmp_path / 'benchmark.png').stat().st_size > 10_000
    by = {r['name']: r for r in data['results']}
    assert [r['k'] for r in data['results']] == [1, 2, 4, 4]
    assert by['K=2']['peak_bytes'] < by['E2E']['peak_bytes']
    assert by['K=4']['peak_bytes'] < by['K=2']['peak_bytes']
    # summing the local losses and calling one backward keeps every graph alive
    assert by['K=4 joint-backward']['peak_bytes'] > 1.3 * by['K=4']['peak_bytes']
    assert results[0]['memory_ratio'] == 1.0


def test_objective_variants_from_sibling_configs(tmp_path, capsys):
    """Each objective's overhead: variants given as the sibling configs of the method table."""
    opts = ['--cfg-options', 'model.backbone.model_name=cifar_resnet20']
    greedy = osp.join(ROOT, 'configs/cls/cifar_resnet32_greedy_k4.py')
    results = benchmark_memory.run(
        [greedy, '--ks', '4', '--batch-size', '8', '--iters', '1', '--out-dir', str(tmp_path),
         '--variant', 'infopro:' + osp.join(ROOT, 'configs/cls/cifar_resnet32_infopro_softmax_k4.py'),
         '--variant', 'dgl:model.local_objective.type=DGL,model.local_objective.head=None'] + opts)
    by = {r['name']: r for r in results}
    assert set(by) == {'K=4', 'infopro', 'dgl'}
    assert by['infopro']['peak_bytes'] > by['K=4']['peak_bytes']  # the decoders' activations
    assert by['infopro']['split'] == by['K=4']['split']  # same cuts: only the objective differs
    import pytest
    with pytest.raises(SystemExit, match='config file .*nope.py does not exist'):
        benchmark_memory.run([greedy, '--ks', '4', '--variant', 'x:nope.py'] + opts)
