"""Detection end to end on a tiny generated set: generator, train, test (COCO mAP), export to stock
mmdet (identical detections without localvision), bad annotation files as one error line."""
import json
import os.path as osp
import shutil
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

CONFIG = osp.join(ROOT, 'configs/det/retinanet_r18_infopro_k2_demo.py')


@pytest.fixture(scope='module')
def det_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('det') / 'set'
    assert make_demo_data.main(['det', '--out', str(root), '--num-train', '8', '--num-val', '4']) == 0
    return str(root)


def options(data_root, iters=2, extra=()):
    opts = [f'{k}_dataloader.{v}' for k in ('train', 'val', 'test')
            for v in (f'dataset.data_root={data_root}/', 'batch_size=4', 'num_workers=0', 'persistent_workers=False')]
    opts += [f'{k}_evaluator.ann_file={data_root}/annotations/instances_val.json' for k in ('val', 'test')]
    opts += ['model.neck.out_channels=16', 'model.bbox_head.in_channels=16', 'model.bbox_head.feat_channels=16',
             'model.bbox_head.stacked_convs=1', 'model.local_objective.head.channels=8', 'model.split.cuts=[[2,1]]',
             'model.test_cfg.score_thr=0.0',  # 2 iterations: scores are still near the focal-loss prior
             f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
             f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1']
    return ['--cfg-options'] + opts + list(extra)


def test_generator_is_reproducible_and_coco(tmp_path):
    from localvision.datasets.synthetic_det import DET_CLASSES, make_shapes_detection
    a = make_shapes_detection(tmp_path / 'a', num_train=4, num_val=2, image_size=96, seed=3)
    b = make_shapes_detection(tmp_path / 'b', num_train=4, num_val=2, image_size=96, seed=3)
    c = make_shapes_detection(tmp_path / 'c', num_train=4, num_val=2, image_size=96, seed=4)
    for rel in ('images/train/00003.png', 'annotations/instances_train.json', 'annotations/instances_val.json'):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / 'images/train/00000.png').read_bytes() != (c / 'images/train/00000.png').read_bytes()
    coco = json.loads((a / 'annotations/instances_train.json').read_text())
    assert [cat['name'] for cat in coco['categories']] == list(DET_CLASSES)
    assert len(coco['images']) == 4 and len(coco['annotations']) >= 8  # 2-6 objects per image
    per_image = {}
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 96 and y + h <= 96
        per_image.setdefault(ann['image_id'], set()).add(ann['category_id'])
    assert max(len(v) for v in per_image.values()) >= 2  # several classes in one image
    assert np.asarray(Image.open(a / 'images/val/00001.png')).shape == (96, 96, 3)


def test_train_then_test_then_export_detects_the_same_in_stock_mmdet(det_root, tmp_path):
    work = str(tmp_path / 'work')
    runner = train_tool.main([CONFIG, '--work-dir', work] + options(det_root))
    assert runner.model.num_units == 2
    ckpt = osp.join(work, 'iter_2.pth')
    metrics = test_tool.main([CONFIG, ckpt, '--work-dir', work] + options(det_root))
    assert 'coco/bbox_mAP' in metrics and 0.0 <= metrics['coco/bbox_mAP'] <= 1.0

    out = str(tmp_path / 'stock.pth')
    _, stock_cfg = export_checkpoint.main([CONFIG, ckpt, out] + options(det_root))
    img = osp.join(det_root, 'images/val/00000.png')
    script = textwrap.dedent(f'''
        import sys, numpy as np
        from mmdet.apis import init_detector, inference_detector
        model = init_detector({stock_cfg!r}, {out!r}, device='cpu')
        model.bbox_head.test_cfg.score_thr = 0.0
        res = inference_detector(model, {img!r}).pred_instances
        np.savez({str(tmp_path / 'stock.npz')!r}, bboxes=res.bboxes.numpy(), scores=res.scores.numpy(),
                 labels=res.labels.numpy())
        assert type(model).__name__ == 'SingleStageDetector', type(model)
        assert type(model.backbone).__name__ == 'ResNet'
        assert not [m for m in sys.modules if m.startswith('localvision')], 'localvision was imported'
    ''')
    proc = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), capture_output=True, text=True,
                          env={'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]

    from mmdet.apis import inference_detector, init_detector
    from mmengine.config import Config, DictAction
    import localvision.det  # noqa: F401
    cfg = Config.fromfile(CONFIG)
    opts = options(det_root)[1:]
    cfg.merge_from_dict({k: DictAction._parse_iterable(v) for k, v in (o.split('=', 1) for o in opts)
                         if k.startswith('model.')})
    local = init_detector(cfg, ckpt, device='cpu')
    local.bbox_head.test_cfg.score_thr = 0.0
    ours = inference_detector(local, img).pred_instances
    stock = np.load(tmp_path / 'stock.npz')
    assert len(ours.scores) > 0
    np.testing.assert_allclose(stock['scores'], ours.scores.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stock['bboxes'], ours.bboxes.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(stock['labels'], ours.labels.numpy())


def _bad_copy(det_root, tmp_path, edit):
    bad = tmp_path / 'bad'
    shutil.copytree(det_root, bad)
    path = bad / 'annotations/instances_train.json'
    coco = json.loads(path.read_text())
    text = edit(coco)
    path.write_text(text if isinstance(text, str) else json.dumps(coco))
    return str(bad)


def _train_error(root, tmp_path):
    with pytest.raises(SystemExit) as e:
        train_tool.main([CONFIG, '--work-dir', str(tmp_path / 'w')] + options(root))
    return str(e.value)


def test_empty_annotation_file_is_one_error_line(det_root, tmp_path):
    root = _bad_copy(det_root, tmp_path, lambda coco: '')
    msg = _train_error(root, tmp_path)
    assert msg.startswith('error: annotation file ') and 'instances_train.json is empty' in msg


def test_annotation_file_without_annotations_is_one_error_line(det_root, tmp_path):
    root = _bad_copy(det_root, tmp_path, lambda coco: coco.update(annotations=[]))
    msg = _train_error(root, tmp_path)
    assert msg.startswith('error: annotation file ') and 'is empty' in msg and 'no annotations' in msg


def test_box_outside_the_image_is_one_error_line(det_root, tmp_path):
    def edit(coco):
        coco['annotations'][3]['bbox'] = [100.0, 20.0, 40.0, 30.0]  # x + w = 140 > 128
    root = _bad_copy(det_root, tmp_path, edit)
    msg = _train_error(root, tmp_path)
    assert msg.startswith('error: annotation file ') and 'instances_train.json' in msg
    assert 'annotation id=4 ' in msg and 'outside the 128x128 image' in msg and '.png' in msg


def test_unknown_category_is_one_error_line(det_root, tmp_path):
    def edit(coco):
        coco['annotations'][1]['category_id'] = 42
    root = _bad_copy(det_root, tmp_path, edit)
    msg = _train_error(root, tmp_path)
    assert msg.startswith('error: annotation file ') and 'annotation id=2 ' in msg
    assert 'category_id=42' in msg and 'not in the class list' in msg


def test_missing_data_is_one_error_line(tmp_path):
    msg = _train_error(str(tmp_path / 'nowhere'), tmp_path)
    assert msg.startswith('error: ShapesDetDataset of train_dataloader: data root ') and 'does not exist' in msg
    assert 'make_demo_data.py det --out ' in msg


def test_export_refuses_a_backbone_stock_mmdet_lacks():
    import torch.nn as nn
    from localvision.det.export import mmdet_resnet_depth
    from localvision.errors import InputError
    from localvision.models.split.staged_timm import create_timm_model
    assert mmdet_resnet_depth(create_timm_model('resnet18', num_classes=0), 'resnet18') == 18
    with pytest.raises(InputError, match='resnet18d.*deep / tiered stem'):
        mmdet_resnet_depth(create_timm_model('resnet18d', num_classes=0), 'resnet18d')
    with pytest.raises(InputError, match='not a timm ResNet'):
        mmdet_resnet_depth(nn.Linear(2, 2), 'linear')
