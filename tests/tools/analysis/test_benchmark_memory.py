"""The benchmark tool on a tiny model (mmpretrain configs of localvision.cls.LocalImageClassifier):
files written, and per-module backward really saves memory."""
import json
import os.path as osp
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import benchmark_memory  # noqa: E402
import gpu_check  # noqa: E402

CIFAR = gpu_check.CLS_MODELS['resnet110'][1]  # cifar_resnet20, Greedy ConvFCHead, SGD


def config(tmp_path, name='cfg', **overrides) -> str:
    """An mmpretrain config of a LocalImageClassifier (localvision.cls) on CIFAR-size inputs."""
    return gpu_check.write_config(str(tmp_path / f'{name}.py'), gpu_check.cls_config(**dict(CIFAR, **overrides)))


def test_benchmark_writes_table_json_png_and_local_training_uses_less_memory(tmp_path, capsys):
    results = benchmark_memory.run([config(tmp_path), '--ks', '1', '2', '4', '--joint', '--batch-size', '16',
                                    '--iters', '1', '--out-dir', str(tmp_path)])
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
    opts = ['--cfg-options', 'model.head.num_classes=10']
    greedy = config(tmp_path, 'greedy', num_modules=4, strategy='equal')  # same cuts whatever the objective
    infopro = config(tmp_path, 'infopro', num_modules=4, strategy='equal',
                     objective=dict(type='InfoPro', loss_mode='softmax', lambda_recon=(5, 1), lambda_task=(1, 1)))
    results = benchmark_memory.run(
        [greedy, '--ks', '4', '--batch-size', '8', '--iters', '1', '--out-dir', str(tmp_path),
         '--variant', 'infopro:' + infopro,
         '--variant', 'dgl:model.local_objective.type=DGL,model.local_objective.head=None'] + opts)
    by = {r['name']: r for r in results}
    assert set(by) == {'K=4', 'infopro', 'dgl'}
    assert by['infopro']['peak_bytes'] > by['K=4']['peak_bytes']  # the decoders' activations
    assert by['infopro']['split'] == by['K=4']['split']  # same cuts: only the objective differs
    import pytest
    with pytest.raises(SystemExit, match='config file .*nope.py does not exist'):
        benchmark_memory.run([greedy, '--ks', '4', '--variant', 'x:nope.py'] + opts)


def test_objectives_on_later_blocks_measured_on_the_configs_objective(tmp_path):
    """``--objectives``: one variant per registered objective and K > 1, built on the config's
    objective where it takes a base (MAN on InfoPro), with the same cuts."""
    infopro = config(tmp_path, 'infopro', num_modules=4, strategy='equal',
                     objective=dict(type='InfoPro', loss_mode='softmax', lambda_recon=(5, 1), lambda_task=(1, 1)))
    results = benchmark_memory.run([infopro, '--ks', '1', '4', '--batch-size', '8', '--iters', '1',
                                    '--objectives', 'MAN', 'HPFF', '--out-dir', str(tmp_path),
                                    '--cfg-options', 'model.head.num_classes=10'])
    by = {r['name']: r for r in results}
    assert list(by) == ['E2E', 'K=4', 'K=4 MAN', 'K=4 HPFF']
    assert by['K=4 MAN']['split'] == by['K=4']['split'] == by['K=4 HPFF']['split']
    assert by['K=4']['peak_bytes'] < by['K=4 HPFF']['peak_bytes']  # two modules' graphs and more aux nets
    assert benchmark_memory.objective_on('MAN', dict(type='InfoPro', lambda_recon=1)) == dict(
        type='MAN', base=dict(type='InfoPro', lambda_recon=1))
    assert benchmark_memory.objective_on('AugLocal', dict(type='MAN')) == dict(type='AugLocal')
    with pytest.raises(SystemExit, match="'Nope' is not a registered local objective"):
        benchmark_memory.objective_on('Nope', None)


def test_a_variant_that_cannot_be_built_is_one_error_line_and_keeps_what_was_measured(tmp_path):
    """A bad ``--variant`` (here an unknown executor) stops with one ``error:`` line naming
    the variant; the variants measured before it stay on disk."""
    cfg = config(tmp_path, num_modules=2, strategy='equal')
    with pytest.raises(SystemExit, match=r"error: variant 'bad': .*executor.*benchmark_partial.json"):
        benchmark_memory.run([cfg, '--ks', '1', '--batch-size', '4', '--iters', '0', '--out-dir', str(tmp_path),
                              '--variant', 'bad:model.executor.type=Nope',
                              '--cfg-options', 'model.head.num_classes=10'])
    partial = json.loads((tmp_path / 'benchmark_partial.json').read_text())
    assert [r['name'] for r in partial['results']] == ['E2E']
    assert not (tmp_path / 'benchmark.json').exists()


def test_segmentation_is_measured_at_the_input_size_asked_for(tmp_path):
    """mmseg's data preprocessor pads every image to the config's training crop (``size``); the
    synthetic batch of ``--input-size`` is measured at that size, not padded to the crop."""
    cfg = osp.join(ROOT, 'configs', 'seg', 'deeplab_infopro_k4_demo.py')
    peaks = []
    for crop in ('(32,32)', '(32,96)'):
        r = benchmark_memory.run([cfg, '--ks', '1', '--batch-size', '2', '--input-size', '3', '32', '32',
                                  '--iters', '0', '--out-dir', str(tmp_path),
                                  '--cfg-options', f'model.data_preprocessor.size={crop}'])
        peaks.append(r[0]['peak_bytes'])
    assert peaks[0] == peaks[1]
