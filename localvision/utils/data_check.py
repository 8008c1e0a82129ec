"""Check, before training or testing starts, that the data a config names exists.

A missing data set is reported as one :class:`~localvision.errors.MissingDataError` naming the
missing path and how to get the data or point the config to it, for every data set type the
configs use (mmseg's Cityscapes / ADE20K, mmdet's COCO, mmpretrain's CIFAR10 / CIFAR100, ImageNet
and CustomDataset (ImageFolder layout), and the generated demo sets), instead of a
``FileNotFoundError`` traceback from inside the data set once the runner builds it. Only paths are
checked here; the data sets check their contents when they load. Nothing is ever downloaded: a
missing CIFAR is reported here, before mmpretrain's CIFAR10 (whose ``download`` defaults to True)
is built.
"""
from __future__ import annotations

import os.path as osp
from typing import Iterator, List, Optional, Tuple

from localvision.errors import MissingDataError

# how to get the data sets the configs use, by data set type
HOW_TO_GET = {
    'CityscapesDataset': 'download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from '
                         'https://www.cityscapes-dataset.com/downloads/ and make the *_labelTrainIds.png maps with '
                         "mmseg's tools/dataset_converters/cityscapes.py",
    'ADE20KDataset': 'download and unzip http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip',
    'CocoDataset': 'download train2017.zip, val2017.zip and annotations_trainval2017.zip from '
                   'https://cocodataset.org/#download',
    'CIFAR10': 'download and unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz '
               '(the cifar-10-batches-py folder goes inside the data root)',
    'CIFAR100': 'download and unpack https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz '
                '(the cifar-100-python folder goes inside the data root)',
    'ImageNet': "get ILSVRC2012 from https://image-net.org/download-images and lay it out as mmpretrain's "
                'ImageNet reads it: <root>/train/<wnid>/*.JPEG, <root>/val/*.JPEG and <root>/meta/{train,val}.txt '
                "('<image> <label>' lines; without meta/, train/ and val/ need one <wnid>/ sub-folder per class), see "
                'https://mmpretrain.readthedocs.io/en/latest/user_guides/dataset_prepare.html#imagenet',
    'CustomDataset': 'put the images in <class_name>/<image> sub-folders of the data root (ImageFolder layout)',
}

# the folder mmpretrain's CIFAR data sets read inside their data root (and data_prefix)
CIFAR_FOLDERS = {'CIFAR10': 'cifar-10-batches-py', 'CIFAR100': 'cifar-100-python'}


def _generate_command(kind: str, root: str) -> Optional[str]:
    """The command that generates a demo set of type ``kind`` at ``root``, if it is one (by its type
    or by the demo set's folder name in ``root``)."""
    from localvision.datasets.forms import (DEMO_FORMS24_COMMAND, DEMO_FORMS24_DIRNAME, DEMO_FORMS_COMMAND,
                                            DEMO_FORMS_DIRNAME)
    from localvision.datasets.relational import DEMO_REL_COMMAND, DEMO_REL_DIRNAME
    from localvision.datasets.synthetic import DEMO_CLS_COMMAND, DEMO_CLS_DIRNAME
    from localvision.datasets.synthetic_det import DEMO_DET_COMMAND, DEMO_DET_DIRNAME
    from localvision.datasets.synthetic_seg import DEMO_SEG_COMMAND, DEMO_SEG_DIRNAME
    root = osp.normpath(root)
    for dirname, command, generated_type in ((DEMO_CLS_DIRNAME, DEMO_CLS_COMMAND, None),
                                             (DEMO_FORMS_DIRNAME, DEMO_FORMS_COMMAND, None),
                                             (DEMO_FORMS24_DIRNAME, DEMO_FORMS24_COMMAND, None),
                                             (DEMO_REL_DIRNAME, DEMO_REL_COMMAND, None),
                                             (DEMO_SEG_DIRNAME, DEMO_SEG_COMMAND, 'SyntheticSegDataset'),
                                             (DEMO_DET_DIRNAME, DEMO_DET_COMMAND, 'ShapesDetDataset')):
        if kind == generated_type or dirname in root.split(osp.sep):
            if root == osp.join('data', dirname):
                return command
            return f"{command.split(' --out ')[0]} --out {root}"
    return None


def _leaf_datasets(ds: dict) -> Iterator[dict]:
    """The data sets inside wrappers (``RepeatDataset``, ``ConcatDataset``, ...), or ``ds`` itself."""
    if isinstance(ds.get('dataset'), dict):
        yield from _leaf_datasets(ds['dataset'])
    elif isinstance(ds.get('datasets'), (list, tuple)):
        for d in ds['datasets']:
            yield from _leaf_datasets(d)
    else:
        yield ds


def required_paths(ds: dict) -> List[Tuple[str, str]]:
    """``(what, path)`` for the data root, annotation file and prefix folders a data set config
    names, joined the way mmengine's ``BaseDataset`` joins them (data root first). mmpretrain's
    CIFAR: the batches folder inside the root; mmpretrain's ``ImageNet`` / ``CustomDataset`` with a
    ``split`` and no ``data_prefix``: the split's folder (what they read)."""
    kind = ds.get('type')
    kind = getattr(kind, '__name__', kind)
    root = ds.get('data_root') or ''
    paths = [('data root', root)] if root else []
    if kind in CIFAR_FOLDERS:
        folder = CIFAR_FOLDERS[kind]
        paths.append((f'{folder} folder', osp.join(root, ds.get('data_prefix') or '', folder)))
        return [(what, p) for what, p in paths if '://' not in p]
    prefix = ds.get('data_prefix') or {}
    if not prefix and ds.get('split') and kind in ('ImageNet', 'CustomDataset'):
        prefix = ds['split']
    if isinstance(prefix, str):  # mmpretrain's short form (CustomDataset, ImageNet)
        prefix = dict(img_path=prefix)
    if ds.get('ann_file'):
        paths.append(('annotation file', osp.join(root, ds['ann_file'])))
    paths += [(f'{key} folder', osp.join(root, p)) for key, p in prefix.items() if isinstance(p, str) and p]
    return [(what, p) for what, p in paths if '://' not in p]  # remote storage is not checked


def check_dataset(ds: dict, where: str) -> None:
    """Raise :class:`MissingDataError` for the first path of ``ds`` (the config of the data set
    of ``where``, e.g. ``'train_dataloader'``) that does not exist."""
    for leaf in _leaf_datasets(ds):
        kind = leaf.get('type')
        kind = getattr(kind, '__name__', kind)
        for what, path in required_paths(leaf):
            if osp.exists(path):
                continue
            root = (leaf.get('data_root') or path).rstrip('/')
            command = _generate_command(kind, root)
            if command:
                how = f'generate it with `{command}`'
            else:
                get = HOW_TO_GET.get(kind, 'get the data set')
                how = (f'{get}; put it at {root} (or link your copy: `ln -s /path/to/data {root}`), or point '
                       f'--cfg-options {where}.dataset.data_root=... to it')
            raise MissingDataError(f'{kind} of {where}: {what} {path} does not exist; {how}')


def check_data(cfg, mode: str = 'train') -> None:
    """Check the data sets a run of ``cfg`` reads: ``'train'``: the training set and, when the
    config validates, the validation set; ``'test'``: the test set."""
    loaders = ['train_dataloader', 'val_dataloader'] if mode == 'train' else ['test_dataloader']
    if mode == 'train' and cfg.get('val_cfg') is None:  # mmpretrain's val_cfg=dict() does validate
        loaders.remove('val_dataloader')
    for where in loaders:
        loader = cfg.get(where)
        if loader and isinstance(loader.get('dataset'), dict):
            check_dataset(loader['dataset'], where)
