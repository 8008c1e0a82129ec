"""Instance segmentation end to end on a tiny generated set: train Mask R-CNN (K=2, InfoProDet with
the mask term), test (COCO box and mask mAP), resume, export to stock mmdet (identical boxes and
masks in a process that never imports localvision), bad masks as one error line before training."""
import json
import os.path as osp
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # starts processes or trains: left out of `pytest -m "not slow"`

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
sys.path.insert(0, osp.join(ROOT, 'tools', 'misc'))
import export_checkpoint  # noqa: E402
import make_demo_data  # noqa: E402
import test as test_tool  # noqa: E402  (tools/test.py)
import train as train_tool  # noqa: E402  (tools/train.py)

CONFIG = osp.join(ROOT, 'configs/det/mask_rcnn_r18_infopro_k2_demo.py')
SIZE = 64


@pytest.fixture(scope='module')
def inst_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('inst') / 'set'
    assert make_demo_data.main(['inst', '--out', str(root), '--num-train', '8', '--num-val', '4',
                                '--size', str(SIZE)]) == 0
    return str(root)


def options(data_root, iters=2, extra=()):
    opts = [f'{k}_dataloader.{v}' for k in ('train', 'val', 'test')
            for v in (f'dataset.data_root={data_root}/', 'batch_size=4', 'num_workers=0', 'persistent_workers=False')]
    opts += [f'{k}_evaluator.ann_file={data_root}/annotations/instances_val.json' for k in ('val', 'test')]
    opts += ['model.neck.out_channels=16', 'model.rpn_head.in_channels=16', 'model.rpn_head.feat_channels=16',
             'model.roi_head.bbox_roi_extractor.out_channels=16', 'model.roi_head.bbox_head.in_channels=16',
             'model.roi_head.bbox_head.fc_out_channels=32', 'model.roi_head.mask_roi_extractor.out_channels=16',
             'model.roi_head.mask_head.in_channels=16', 'model.roi_head.mask_head.conv_out_channels=8',
             'model.roi_head.mask_head.num_convs=1', 'model.local_objective.head.channels=8',
             'model.split.cuts=[[2,1]]', 'model.test_cfg.rcnn.score_thr=0.0',
             f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
             f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1']
    return ['--cfg-options'] + opts + list(extra)


def test_train_test_resume_export_same_masks_in_stock_mmdet(inst_root, tmp_path):
    work = str(tmp_path / 'work')
    runner = train_tool.main([CONFIG, '--work-dir', work] + options(inst_root))
    assert runner.model.num_units == 2 and runner.model.roi_head.with_mask
    ckpt = osp.join(work, 'iter_2.pth')
    metrics = test_tool.main([CONFIG, ckpt, '--work-dir', work] + options(inst_root))
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics) and 0.0 <= metrics['coco/segm_mAP'] <= 1.0

    out = str(tmp_path / 'stock.pth')
    _, stock_cfg = export_checkpoint.main([CONFIG, ckpt, out] + options(inst_root))
    img = osp.join(inst_root, 'images/val/00000.png')
    script = textwrap.dedent(f'''
        import sys, numpy as np
        from mmdet.apis import init_detector, inference_detector
        model = init_detector({stock_cfg!r}, {out!r}, device='cpu')
        res = inference_detector(model, {img!r}).pred_instances
        np.savez({str(tmp_path / 'stock.npz')!r}, bboxes=res.bboxes.numpy(), scores=res.scores.numpy(),
                 labels=res.labels.numpy(), masks=res.masks.numpy())
        assert type(model).__name__ == 'MaskRCNN', type(model)
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
    opts = options(inst_root)[1:]
    cfg.merge_from_dict({k: DictAction._parse_iterable(v) for k, v in (o.split('=', 1) for o in opts)
                         if k.startswith('model.')})
    local = init_detector(cfg, ckpt, device='cpu')
    ours = inference_detector(local, img).pred_instances
    stock = np.load(tmp_path / 'stock.npz')
    assert len(ours.scores) > 0 and stock['masks'].shape == (len(ours.scores), SIZE, SIZE)
    np.testing.assert_allclose(stock['scores'], ours.scores.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stock['bboxes'], ours.bboxes.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(stock['labels'], ours.labels.numpy())
    np.testing.assert_array_equal(stock['masks'], ours.masks.numpy())

    # interrupted after 2 iterations: --resume continues from iteration 2 (weights, optimizer) up to 3
    runner = train_tool.main([CONFIG, '--work-dir', work, '--resume'] + options(inst_root, iters=3))
    assert runner.iter == 3 and osp.isfile(osp.join(work, 'iter_3.pth'))


def _train_error(inst_root, tmp_path, edit):
    bad = tmp_path / 'bad'
    shutil.copytree(inst_root, bad)
    path = bad / 'annotations/instances_train.json'
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))
    with pytest.raises(SystemExit) as e:
        train_tool.main([CONFIG, '--work-dir', str(tmp_path / 'w')] + options(str(bad)))
    return str(e.value)


def test_empty_polygons_end_training_with_one_error_line(inst_root, tmp_path):
    def edit(coco):
        coco['annotations'][3]['segmentation'] = []
    msg = _train_error(inst_root, tmp_path, edit)
    assert msg.startswith('error: annotation file ') and 'instances_train.json' in msg and '\n' not in msg
    assert 'annotation id=4 (image id=' in msg and '.png' in msg and 'empty segmentation' in msg


def test_mask_not_matching_its_box_ends_training_with_one_error_line(inst_root, tmp_path):
    def edit(coco):
        x, y, w, h = coco['annotations'][1]['bbox']
        coco['annotations'][1]['bbox'] = [x, y, w / 4, h / 4]
    msg = _train_error(inst_root, tmp_path, edit)
    assert msg.startswith('error: annotation file ') and 'annotation id=2 ' in msg
    assert 'mask that does not match its box' in msg


def test_missing_inst_set_names_the_generator(tmp_path):
    with pytest.raises(SystemExit) as e:
        train_tool.main([CONFIG, '--work-dir', str(tmp_path / 'w')] + options(str(tmp_path / 'nowhere')))
    msg = str(e.value)
    assert msg.startswith('error: ShapesInstDataset of train_dataloader: data root ') and 'does not exist' in msg
