"""Segmentation data sets (registered in mmseg's DATASETS) and label checks."""
from __future__ import annotations

import os.path as osp
from typing import List, Optional

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from localvision.datasets.synthetic_seg import DEMO_SEG_COMMAND, DEMO_SEG_DIRNAME, SEG_CLASSES, SEG_PALETTE
from localvision.errors import InputError, MissingDataError


def check_label_files(data_list: List[dict], num_classes: int, ignore_index: int = 255,
                      max_files: Optional[int] = None) -> None:
    """Raise :class:`InputError` naming the first label file with a value outside
    ``0..num_classes-1`` (other than ``ignore_index``), after ``reduce_zero_label`` / ``label_map``."""
    from PIL import Image
    for info in data_list[:max_files]:
        path = info.get('seg_map_path')
        if path is None:
            continue
        if not osp.isfile(path):
            raise MissingDataError(f'label map {path} does not exist (image {info.get("img_path")})')
        seg = np.asarray(Image.open(path))
        vals = np.unique(seg).astype(np.int64)
        if info.get('reduce_zero_label'):
            vals = np.where(vals == 0, 255, vals - 1)
            vals = np.where(vals == 254, 255, vals)
        label_map = info.get('label_map') or {}
        vals = np.array([label_map.get(int(v), int(v)) for v in vals])
        bad = vals[(vals != ignore_index) & ((vals < 0) | (vals >= num_classes))]
        if bad.size:
            raise InputError(f'label map {path} has values {sorted(set(bad.tolist()))[:10]} outside the class range '
                             f'0..{num_classes - 1} (ignore_index={ignore_index}); fix the annotations or the '
                             'number of classes')


@DATASETS.register_module()
class SyntheticSegDataset(BaseSegDataset):
    """The generated shapes segmentation set (``python tools/misc/make_demo_data.py seg``).

    mmseg folder layout (``img_dir/{train,val}``, ``ann_dir/{train,val}``, PNG images and label
    maps). A missing folder or a label value outside the class range is reported as one
    :class:`~localvision.errors.InputError` when the data set is built, before training starts.

    Args:
        check_labels: scan every label map once when the data set is built.
    """

    METAINFO = dict(classes=SEG_CLASSES, palette=SEG_PALETTE)

    def __init__(self, img_suffix: str = '.png', seg_map_suffix: str = '.png', check_labels: bool = True,
                 **kwargs) -> None:
        self.check_labels = check_labels
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get('img_path', None)
        ann_dir = self.data_prefix.get('seg_map_path', None)
        for what, d in (('image', img_dir), ('label', ann_dir)):
            if d is not None and not osp.isdir(d):
                hint = (f'; generate it with `{DEMO_SEG_COMMAND}`' if DEMO_SEG_DIRNAME in str(self.data_root or d)
                        else '')
                raise MissingDataError(f'{what} folder {d} does not exist (data_root={self.data_root!r}){hint}')
        data_list = super().load_data_list()
        if not data_list:
            raise MissingDataError(f'no *{self.img_suffix} images in {img_dir}')
        if self.check_labels:
            check_label_files(data_list, len(self.metainfo['classes']), self.ignore_index)
        return data_list
