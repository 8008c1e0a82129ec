"""Export of a LocalImageClassifier to stock timm (``tools/export_checkpoint.py``).

The repository's classification configs, shrunk (32x32 input, K=2, random weights): the exported
checkpoint loads with the printed ``timm.create_model(...)`` call in a process that never imports
localvision and gives the local model's ``forward(mode='tensor')`` logits. Models stock timm
cannot express (a ContSup context path, the CIFAR ResNets localvision adds to timm) are refused
with one ``error:`` line.
"""
import json
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import export_checkpoint  # noqa: E402

RESNET = osp.join(ROOT, 'configs/cls/cifar_resnet32_shapes_greedy_k4.py')
VIT = osp.join(ROOT, 'configs/cls/vit_tiny_shapes_greedy_k4.py')
CONTSUP = osp.join(ROOT, 'configs/cls/cifar_resnet32_contsup_r1e_k4.py')
K2 = ['model.split.cuts=None', 'model.split.num_modules=2', 'model.split.strategy=equal']
STOCK_RESNET = ['model.backbone.model_name=resnet18'] + K2  # a ResNet timm has without localvision
TINY_VIT = ['model.backbone.embed_dim=32', 'model.backbone.depth=2', 'model.backbone.num_heads=2',
            'model.backbone.patch_size=8'] + K2


def build(config, options):
    """The local classifier of ``config`` with ``--cfg-options options``, as the tools read them."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import localvision.cls  # noqa: F401
    from localvision.utils.config import load_config
    argv = [config, 'ckpt', 'out'] + (['--cfg-options', *options] if options else [])
    cfg = load_config(config, export_checkpoint.parse_args(argv).cfg_options)
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def save_checkpoint(model, path):
    """Save as mmengine's CheckpointHook does: the state dict and the run's meta."""
    meta = dict(epoch=1, iter=2, seed=0, mmengine_version='0.10.7', dataset_meta=dict(classes=tuple('abcdefghij')))
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)
    return str(path)


@pytest.mark.parametrize('config,options', [(RESNET, STOCK_RESNET), (VIT, TINY_VIT)], ids=['resnet18', 'vit'])
def test_export_loads_in_stock_timm_with_identical_logits(config, options, tmp_path, capsys):
    local = build(config, options)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        local.train()(x * 2 + 0.5, mode='tensor')  # BN running statistics away from their initial values
        ours = local.eval()(x, mode='tensor')
    assert any(k.startswith('objectives.') for k in local.state_dict())
    ckpt = save_checkpoint(local, tmp_path / 'iter_2.pth')
    out = str(tmp_path / 'timm.pth')

    ret = export_checkpoint.main([config, ckpt, out, '--cfg-options', *options])
    assert ret == (out, str(tmp_path / 'timm_config.json'))
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    stock = printed.split('(stock: ', 1)[1][:-1]
    record = json.loads((tmp_path / 'timm_config.json').read_text())
    assert stock == record['stock'] and stock.startswith(f"timm.create_model({record['model_name']!r}, num_classes=10")
    assert record['data_preprocessor']['std'] == [63.75] * 3
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {'state_dict', 'meta'} and saved['meta']['dataset_meta']['classes'] == tuple('abcdefghij')
    classifier = set(saved['state_dict']) - set(local.backbone.model.state_dict())  # the head's linear layer
    assert set(local.backbone.model.state_dict()) < set(saved['state_dict']) and len(classifier) == 2

    torch.save(x, tmp_path / 'x.pt')
    script = textwrap.dedent(f'''
        import sys, torch, timm
        model = {stock}.eval()
        with torch.no_grad():
            torch.save(model(torch.load('x.pt')), 'y.pt')
        assert not [m for m in sys.modules if m.startswith('localvision')], 'localvision was imported'
    ''')
    proc = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), capture_output=True, text=True,
                          env={'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = torch.load(tmp_path / 'y.pt')
    assert theirs.shape == (3, 10) and torch.allclose(theirs, ours, atol=1e-5)


def one_error_line(argv) -> str:
    with pytest.raises(SystemExit) as e:
        export_checkpoint.main(argv)
    msg = str(e.value.code)
    assert msg.startswith('error: ') and '\n' not in msg
    return msg


def test_contsup_model_is_refused_with_one_error_line(tmp_path):
    ckpt = save_checkpoint(build(CONTSUP, STOCK_RESNET), tmp_path / 'contsup.pth')
    for config in (CONTSUP, RESNET):  # context in the config; context only in the checkpoint's keys
        msg = one_error_line([config, ckpt, str(tmp_path / 'x.pth'), '--cfg-options', *STOCK_RESNET])
        assert msg.startswith('error: the model has a context supply (model.context, ContSup)')
        assert 'export a model trained without model.context' in msg
    assert not osp.exists(tmp_path / 'x.pth')


def test_cifar_resnet_is_refused_with_one_error_line(tmp_path):
    ckpt = save_checkpoint(build(RESNET, []), tmp_path / 'cifar.pth')
    msg = one_error_line([RESNET, ckpt, str(tmp_path / 'x.pth')])
    assert msg.startswith('error: backbone cifar_resnet32 is registered in timm by localvision')
    assert 'stock timm (without localvision) cannot build it' in msg
    assert not osp.exists(tmp_path / 'x.pth')


def test_head_with_a_hidden_layer_is_refused_with_one_error_line(tmp_path):
    options = STOCK_RESNET + ["model.head.type=StackedLinearClsHead", "model.head.mid_channels=[16]"]
    ckpt = save_checkpoint(build(RESNET, options), tmp_path / 'stacked.pth')
    msg = one_error_line([RESNET, ckpt, str(tmp_path / 'x.pth'), '--cfg-options', *options])
    assert 'stock timm holds one linear classifier on its own pooling' in msg
    assert not osp.exists(tmp_path / 'x.pth')
