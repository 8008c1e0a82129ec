"""A missing data set is one error naming the path and how to get it, for every data set type the
configs use (checked on the configs themselves, run from a folder without their data)."""
import os.path as osp

import pytest

from localvision.errors import MissingDataError
from localvision.utils.config import load_config
from localvision.utils.data_check import check_data, required_paths

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# (config, data set type, what the message must say to get or make the data)
CASES = [
    ('configs/seg/deeplab_infopro_k4.py', 'CityscapesDataset', 'cityscapes-dataset.com'),
    ('configs/seg/upernet_vit_small_infopro_k4.py', 'ADE20KDataset', 'ADEChallengeData2016.zip'),
    ('configs/seg/deeplab_infopro_k4_demo.py', 'SyntheticSegDataset', 'make_demo_data.py seg'),
    ('configs/det/retinanet_r50_infopro_k2.py', 'CocoDataset', 'cocodataset.org'),
    ('configs/det/retinanet_r18_infopro_k2_demo.py', 'ShapesDetDataset', 'make_demo_data.py det'),
    ('configs/cls/cifar_resnet32_greedy_k2.py', 'CIFAR10', 'cifar-10-python.tar.gz'),
    ('configs/cls/cifar_resnet32_shapes_greedy_k4.py', 'CustomDataset', 'make_demo_data.py cls'),
    ('configs/cls/cifar_resnet32_forms_greedy_k4.py', 'CustomDataset', 'make_demo_data.py forms'),
    ('configs/cls/cifar_resnet32_forms24_greedy_k4.py', 'CustomDataset',
     'make_demo_data.py forms --size 24 --out data/lv_forms24_cls'),
    ('configs/cls/imagenet_resnet101_infopro_k2.py', 'ImageNet', "mmpretrain's ImageNet reads it"),
]


@pytest.mark.parametrize('config,kind,how', CASES, ids=[c[1] for c in CASES])
def test_missing_data_set_is_one_error_naming_the_path_and_how_to_get_it(config, kind, how, tmp_path,
                                                                         monkeypatch):
    cfg = load_config(osp.join(ROOT, config))
    monkeypatch.chdir(tmp_path)  # the configs' data roots are relative: nothing there
    with pytest.raises(MissingDataError) as e:
        check_data(cfg, 'train')
    msg = str(e.value)
    root = cfg.train_dataloader.dataset.get('data_root') or cfg.train_dataloader.dataset.dataset.data_root
    assert '\n' not in msg
    assert msg.startswith(f'{kind} of train_dataloader: data root {root} does not exist')
    assert how in msg
    if 'make_demo_data' not in how:  # a real data set: also how to point the config to a copy
        assert 'ln -s' in msg and 'train_dataloader.dataset.data_root' in msg


def test_a_missing_folder_under_an_existing_root_is_named(tmp_path):
    cfg = load_config(osp.join(ROOT, 'configs/seg/deeplab_infopro_k4.py'),
                      {'train_dataloader.dataset.data_root': str(tmp_path)})
    (tmp_path / 'leftImg8bit' / 'train').mkdir(parents=True)
    with pytest.raises(MissingDataError, match=f'seg_map_path folder {tmp_path}/gtFine/train does not exist'):
        check_data(cfg, 'train')


def test_present_data_passes_and_test_mode_checks_only_the_test_set(tmp_path, tiny_cls_root):
    config = osp.join(ROOT, 'configs/cls/cifar_resnet32_shapes_greedy_k4.py')
    options = {f'{s}_dataloader.dataset.data_root': tiny_cls_root for s in ('train', 'val', 'test')}
    check_data(load_config(config, options), 'train')
    check_data(load_config(config, {'test_dataloader.dataset.data_root': tiny_cls_root}), 'test')
    without_val = load_config(config, {'train_dataloader.dataset.data_root': tiny_cls_root, 'val_cfg': None})
    check_data(without_val, 'train')  # no validation: its missing data set does not matter


def test_required_paths_follow_mmengine_joining_and_wrappers():
    ds = dict(type='CocoDataset', data_root='data/coco/', ann_file='annotations/a.json',
              data_prefix=dict(img='train2017/', seg=''))
    assert required_paths(ds) == [('data root', 'data/coco/'), ('annotation file', 'data/coco/annotations/a.json'),
                                  ('img folder', 'data/coco/train2017/')]
    assert required_paths(dict(data_root='/d', data_prefix='train')) == [('data root', '/d'),
                                                                         ('img_path folder', '/d/train')]
    wrapped = dict(type='RepeatDataset', times=2, dataset=dict(type='CIFAR10', data_root='/nonexistent/c'))
    with pytest.raises(MissingDataError, match='CIFAR10 of train_dataloader: data root /nonexistent/c'):
        from localvision.utils.data_check import check_dataset
        check_dataset(wrapped, 'train_dataloader')


def test_mmpretrain_data_sets_name_the_folders_they_read():
    # CIFAR: the python batches inside the root; ImageNet / CustomDataset with a split: its folder
    assert required_paths(dict(type='CIFAR10', data_root='data/cifar10', split='train', download=False)) == [
        ('data root', 'data/cifar10'), ('cifar-10-batches-py folder', 'data/cifar10/cifar-10-batches-py')]
    assert required_paths(dict(type='CIFAR100', data_root='/c', data_prefix='x'))[-1] == (
        'cifar-100-python folder', '/c/x/cifar-100-python')
    assert required_paths(dict(type='ImageNet', data_root='data/imagenet', split='val')) == [
        ('data root', 'data/imagenet'), ('img_path folder', 'data/imagenet/val')]
    assert required_paths(dict(type='ImageNet', data_root='/i', split='val', data_prefix='v2'))[-1] == (
        'img_path folder', '/i/v2')
    assert required_paths(dict(type='CustomDataset', data_root='/d', split='train'))[-1] == ('img_path folder',
                                                                                          '/d/train')


def test_cifar_without_its_batches_is_reported_before_mmpretrain_could_download_it(tmp_path):
    cfg = load_config(osp.join(ROOT, 'configs/cls/cifar_resnet32_e2e.py'),
                      {'train_dataloader.dataset.data_root': str(tmp_path)})
    with pytest.raises(MissingDataError) as e:
        check_data(cfg, 'train')
    msg = str(e.value)
    assert msg.startswith(f'CIFAR10 of train_dataloader: cifar-10-batches-py folder {tmp_path}/cifar-10-batches-py '
                          'does not exist; download and unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz')
    assert '\n' not in msg


def test_imagenet_without_its_val_folder_says_where_to_put_it(tmp_path):
    cfg = load_config(osp.join(ROOT, 'configs/cls/imagenet_deit_small_greedy_k4.py'),
                      {f'{s}_dataloader.dataset.data_root': str(tmp_path) for s in ('train', 'val')})
    (tmp_path / 'train').mkdir()
    with pytest.raises(MissingDataError) as e:
        check_data(cfg, 'train')
    msg = str(e.value)
    assert msg.startswith(f'ImageNet of val_dataloader: img_path folder {tmp_path}/val does not exist; get ILSVRC2012')
    assert '<root>/val/*.JPEG' in msg and 'meta/{train,val}.txt' in msg and '\n' not in msg


def test_a_generated_set_elsewhere_is_generated_there(tmp_path):
    cfg = load_config(osp.join(ROOT, 'configs/det/retinanet_r18_infopro_k2_demo.py'),
                      {'train_dataloader.dataset.data_root': f'{tmp_path}/mine/'})
    with pytest.raises(MissingDataError, match=f'generate it with `python tools/misc/make_demo_data.py det --out '
                                               f'{tmp_path}/mine`$'):
        check_data(cfg, 'train')
