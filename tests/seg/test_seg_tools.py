"""Segmentation end to end on a tiny generated set: data generator, train, test, export, bad input."""
import json
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
sys.path.insert(0, osp.join(ROOT, 'tools', 'misc'))
import export_checkpoint  # noqa: E402
import make_demo_data  # noqa: E402
import test as test_tool  # noqa: E402  (tools/test.py)
import train as train_tool  # noqa: E402  (tools/train.py)

CONFIG = osp.join(ROOT, 'configs/seg/deeplab_infopro_k4_demo.py')


@pytest.fixture(scope='module')
def seg_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('seg') / 'set'
    assert make_demo_data.main(['seg', '--out', str(root), '--num-train', '8', '--num-val', '4']) == 0
    return str(root)


def options(data_root, iters=2):
    return ['--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}', f'test_dataloader.dataset.data_root={data_root}',
            'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            'val_dataloader.batch_size=4', 'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
            'test_dataloader.batch_size=4', 'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            'model.split.cuts=[[1,2],[2,0],[3,0]]', 'model.decode_head.channels=16', 'model.auxiliary_head.channels=8',
            'model.local_objective.head.channels=16', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1']


def test_generator_is_reproducible_and_in_mmseg_layout(tmp_path):
    from localvision.datasets.synthetic_seg import SEG_CLASSES, make_shapes_segmentation
    a = make_shapes_segmentation(tmp_path / 'a', num_train=3, num_val=2, image_size=32, seed=5)
    b = make_shapes_segmentation(tmp_path / 'b', num_train=3, num_val=2, image_size=32, seed=5)
    for rel in ('img_dir/train/00002.png', 'ann_dir/val/00001.png'):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    labels = np.concatenate([np.asarray(Image.open(p)).ravel() for p in sorted((a / 'ann_dir/train').iterdir())])
    assert labels.max() < len(SEG_CLASSES) and len(np.unique(labels)) >= 3
    assert np.asarray(Image.open(a / 'img_dir/train/00000.png')).shape == (32, 32, 3)
    assert json.loads((a / 'meta.json').read_text())['params']['seed'] == 5


# the demo's CIFAR ResNet is added to timm by localvision, so stock mmseg cannot build it: export
# is tested with a stock timm ResNet-18-D (output stride 8) in its place
STOCK_BACKBONE = {'model.backbone.model_name': 'resnet18d', 'model.backbone.output_stride': 8,
                  'model.backbone.out_stages': [1, 2, 3, 4], 'model.split.cuts': [[2, 0], [3, 0], [4, 0]]}


def test_demo_backbone_export_is_refused_with_one_error_line(seg_root, tmp_path):
    work = str(tmp_path / 'work')
    train_tool.main([CONFIG, '--work-dir', work] + options(seg_root))
    with pytest.raises(SystemExit, match=r'^error: backbone cifar_resnet32 is registered in timm by localvision'):
        export_checkpoint.main([CONFIG, osp.join(work, 'iter_2.pth'), str(tmp_path / 'x.pth')] + options(seg_root))


def test_train_then_test_then_export_predicts_the_same_in_stock_mmseg(seg_root, tmp_path):
    work = str(tmp_path / 'work')
    stock_opts = [f'{k}={v}'.replace(' ', '') for k, v in STOCK_BACKBONE.items()]
    runner = train_tool.main([CONFIG, '--work-dir', work] + options(seg_root) + stock_opts)
    assert runner.model.num_units == 4
    ckpt = osp.join(work, 'iter_2.pth')
    metrics = test_tool.main([CONFIG, ckpt, '--work-dir', work] + options(seg_root) + stock_opts)
    assert 0.0 <= metrics['mIoU'] <= 100.0 and 'aAcc' in metrics

    out = str(tmp_path / 'stock.pth')
    _, stock_cfg = export_checkpoint.main([CONFIG, ckpt, out] + options(seg_root) + stock_opts)
    img = osp.join(seg_root, 'img_dir/val/00000.png')
    script = textwrap.dedent(f'''
        import sys, numpy as np
        from mmseg.apis import init_model, inference_model
        model = init_model({stock_cfg!r}, {out!r}, device='cpu')
        res = inference_model(model, {img!r})
        np.save({str(tmp_path / 'stock.npy')!r}, res.seg_logits.data.numpy())
        assert type(model).__name__ == 'EncoderDecoder'
        assert not [m for m in sys.modules if m.startswith('localvision')], 'localvision was imported'
    ''')
    proc = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), capture_output=True, text=True,
                          env={'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]

    from mmseg.apis import inference_model, init_model
    import localvision.seg  # noqa: F401
    from mmengine.config import Config
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(dict(STOCK_BACKBONE, **{'model.decode_head.channels': 16, 'model.auxiliary_head.channels': 8,
                                                'model.local_objective.head.channels': 16}))
    local = init_model(cfg, ckpt, device='cpu')
    ours = inference_model(local, img).seg_logits.data.numpy()
    np.testing.assert_allclose(np.load(tmp_path / 'stock.npy'), ours, rtol=1e-4, atol=1e-5)


def test_missing_data_root_is_one_error_line(tmp_path):
    with pytest.raises(SystemExit, match=r'^error: SyntheticSegDataset of train_dataloader: data root .*nowhere does '
                                         r'not exist; generate it with `python tools/misc/make_demo_data.py seg --out '):
        train_tool.main([CONFIG, '--work-dir', str(tmp_path)] + options(str(tmp_path / 'nowhere')))


def test_label_outside_class_range_is_one_error_line(seg_root, tmp_path):
    import shutil
    bad = tmp_path / 'bad'
    shutil.copytree(seg_root, bad)
    lab = np.asarray(Image.open(bad / 'ann_dir/train/00003.png')).copy()
    lab[:4, :4] = 9
    Image.fromarray(lab).save(bad / 'ann_dir/train/00003.png')
    with pytest.raises(SystemExit, match=r'^error: label map .*00003.png has values \[9\] outside the class range 0..5'):
        train_tool.main([CONFIG, '--work-dir', str(tmp_path / 'w')] + options(str(bad)))


def test_in_index_beyond_the_levels_is_one_error_line(seg_root, tmp_path):
    with pytest.raises(SystemExit, match=r'^error: model.decode_head.in_index=5 points at level'):
        train_tool.main([CONFIG, '--work-dir', str(tmp_path)] + options(seg_root) + ['model.decode_head.in_index=5'])
