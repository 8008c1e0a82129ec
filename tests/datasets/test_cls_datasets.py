import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from localvision.datasets import CIFAR10Dataset, CIFAR100Dataset, ImageFolderDataset
from localvision.registry import DATASETS


def _write_cifar(folder, files, n=4, label_key='labels', num_classes=10):
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i, name in enumerate(files):
        entry = {'data': rng.randint(0, 256, (n, 3072)).astype(np.uint8),
                 label_key: [(i + j) % num_classes for j in range(n)], 'batch_label': name}
        with open(folder / name, 'wb') as f:
            pickle.dump(entry, f)
    return folder


CIFAR10_FILES = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']


def test_cifar10_reads_batches(tmp_path):
    batches = _write_cifar(tmp_path / 'cifar-10-batches-py', CIFAR10_FILES)
    pipeline = [dict(type='RandomCrop', size=32, padding=4), dict(type='PackClsInputs')]
    train = CIFAR10Dataset(data_root=str(tmp_path), pipeline=pipeline)
    assert len(train) == 20 and train.metainfo['classes'][0] == 'airplane'
    info = train.get_data_info(0)
    assert info['img'].shape == (32, 32, 3) and info['img'].dtype == np.uint8 and info['gt_label'] == 0
    # HWC RGB from the CHW-planar row: pixel (0, 0) is (R, G, B) = data[0], data[1024], data[2048]
    with open(batches / 'data_batch_1', 'rb') as f:
        row = pickle.load(f)['data'][0]
    assert info['img'][0, 0].tolist() == [row[0], row[1024], row[2048]]
    item = train[1]
    assert item['inputs'].shape == (3, 32, 32) and item['data_samples'].gt_label.tolist() == [1]

    test = CIFAR10Dataset(data_root=str(batches), test_mode=True)  # the batches folder itself
    assert len(test) == 4


def test_cifar100_and_registry(tmp_path):
    _write_cifar(tmp_path / 'cifar-100-python', ['train', 'test'], n=3, label_key='fine_labels', num_classes=100)
    ds = DATASETS.build(dict(type='CIFAR100Dataset', data_root=str(tmp_path), test_mode=True))
    assert isinstance(ds, CIFAR100Dataset) and len(ds) == 3 and len(ds.metainfo['classes']) == 100


def test_cifar_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        CIFAR10Dataset(data_root=str(tmp_path / 'nowhere'))
    batches = _write_cifar(tmp_path / 'cifar-10-batches-py', CIFAR10_FILES[:2])
    with pytest.raises(FileNotFoundError, match='data_batch_3'):
        CIFAR10Dataset(data_root=str(tmp_path))
    (batches / 'test_batch').write_bytes(b'this is not a pickle')
    with pytest.raises(ValueError, match='corrupt batch file .*test_batch'):
        CIFAR10Dataset(data_root=str(tmp_path), test_mode=True)


def _write_folder(root, counts):
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((6, 5, 3), i * 10, np.uint8)).save(root / name / f'{i}.png')


def test_image_folder(tmp_path):
    _write_folder(tmp_path / 'train', {'dog': 2, 'cat': 3})
    (tmp_path / 'train' / 'cat' / 'notes.txt').write_text('not an image')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackClsInputs')]
    ds = ImageFolderDataset(data_root=str(tmp_path), data_prefix='train', pipeline=pipeline)
    assert ds.metainfo['classes'] == ('cat', 'dog') and len(ds) == 5
    assert [ds.get_data_info(i)['gt_label'] for i in range(5)] == [0, 0, 0, 1, 1]
    item = ds[4]
    assert item['inputs'].shape == (3, 6, 5) and item['inputs'].dtype == torch.uint8
    assert item['data_samples'].gt_label.tolist() == [1] and item['data_samples'].img_path.endswith('1.png')

    only_dog = ImageFolderDataset(data_root=str(tmp_path), data_prefix=dict(img_path='train'), classes=['dog'])
    assert len(only_dog) == 2 and only_dog.metainfo['classes'] == ('dog',)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'lv_shapes_cls.*make_demo_data\.py cls'):
        ImageFolderDataset(data_root=str(tmp_path / 'data' / 'lv_shapes_cls'), data_prefix='train')
    with pytest.raises(FileNotFoundError, match='no class folders'):
        ImageFolderDataset(data_root=str(tmp_path))
    _write_folder(tmp_path / 'train', {'a': 1, 'b': 0})
    with pytest.raises(FileNotFoundError, match='no images .* b$'):
        ImageFolderDataset(data_root=str(tmp_path), data_prefix='train')
    with pytest.raises(FileNotFoundError, match='missing .*: zebra'):
        ImageFolderDataset(data_root=str(tmp_path), data_prefix='train', classes=['a', 'zebra'])


def test_cifar_batch_that_smuggles_code_is_refused(tmp_path):
    import os
    import pickle

    import pytest

    from localvision.datasets.cls_datasets import CIFAR10Dataset
    from localvision.errors import InputError

    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned > ' + str(tmp_path / 'pwned'),))

    root = tmp_path / 'cifar-10-batches-py'
    root.mkdir()
    for name in ['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch']:
        with open(root / name, 'wb') as f:
            pickle.dump({'data': Evil(), 'labels': [0]}, f)
    with pytest.raises(InputError, match='corrupt batch file .* is not allowed'):
        CIFAR10Dataset(data_root=str(tmp_path), test_mode=True, pipeline=[])
    assert not (tmp_path / 'pwned').exists()
