"""Classification transforms (registered in ``localvision.registry.TRANSFORMS``).

They work on mmcv's ``results`` dict (``results['img']`` is an HWC ``uint8`` numpy image) and
draw their randomness from numpy's global RNG, so mmengine's ``randomness=dict(seed=...)``
makes runs reproducible. mmcv's own transforms (``LoadImageFromFile``, ``RandomFlip``,
``Resize``...) can be mixed in freely with ``default_scope='localvision'``.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

try:
    from mmcv.transforms import BaseTransform
except ModuleNotFoundError as e:  # mmcv is optional for classification (see localvision/registry.py)
    if e.name != 'mmcv':
        raise

    class BaseTransform:  # type: ignore[no-redef]
        """Stand-in for ``mmcv.transforms.BaseTransform`` when mmcv is not installed."""

        def __call__(self, results: Dict) -> Optional[Dict]:
            return self.transform(results)

        def transform(self, results: Dict) -> Optional[Dict]:
            raise NotImplementedError

from ..registry import TRANSFORMS
from ..structures import ClsDataSample

SizeLike = Union[int, Sequence[int]]


def _as_hw(size: SizeLike, name: str) -> Tuple[int, int]:
    """``int`` -> ``(s, s)``; ``(h, w)`` -> ``(h, w)``; anything else is an error."""
    if isinstance(size, int):
        hw = (size, size)
    elif isinstance(size, Sequence) and len(size) == 2:
        hw = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f'{name} must be an int or a (h, w) pair, got {size!r}')
    if min(hw) <= 0:
        raise ValueError(f'{name} must be positive, got {size!r}')
    return hw


def _set_img(results: dict, img: np.ndarray) -> dict:
    results['img'] = img
    results['img_shape'] = img.shape[:2]
    return results


@TRANSFORMS.register_module()
class RandomCrop(BaseTransform):
    """Pad (optionally) then crop a random ``size`` window (CIFAR: ``size=32, padding=4``).

    Args:
        size: output ``int`` or ``(h, w)``.
        padding: pixels added on each side before cropping: ``int`` (all sides), ``(pad_h,
            pad_w)`` or ``(top, bottom, left, right)``; ``None`` for no padding.
        pad_val: fill value for ``padding_mode='constant'`` (a number or one per channel).
        padding_mode: ``'constant'``, ``'edge'``, ``'reflect'`` or ``'symmetric'`` (numpy modes).

    An image smaller than ``size`` after padding is padded further (centred) to fit.
    """

    _MODES = ('constant', 'edge', 'reflect', 'symmetric')

    def __init__(self, size: SizeLike, padding: Optional[Union[int, Sequence[int]]] = None,
                 pad_val: Union[float, Sequence[float]] = 0, padding_mode: str = 'constant') -> None:
        self.size = _as_hw(size, 'size')
        self.padding = self._as_tblr(padding)
        if padding_mode not in self._MODES:
            raise ValueError(f'padding_mode must be one of {self._MODES}, got {padding_mode!r}')
        self.pad_val = pad_val
        self.padding_mode = padding_mode

    @staticmethod
    def _as_tblr(padding) -> Tuple[int, int, int, int]:
        if padding is None:
            return (0, 0, 0, 0)
        if isinstance(padding, int):
            return (padding,) * 4
        padding = tuple(int(p) for p in padding)
        if len(padding) == 2:
            return (padding[0], padding[0], padding[1], padding[1])
        if len(padding) == 4:
            return padding  # type: ignore[return-value]
        raise TypeError(f'padding must be an int, (pad_h, pad_w) or (top, bottom, left, right), got {padding!r}')

    def _pad(self, img: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        if not (top or bottom or left or right):
            return img
        widths = [(top, bottom), (left, right)] + [(0, 0)] * (img.ndim - 2)
        if self.padding_mode != 'constant':
            return np.pad(img, widths, mode=self.padding_mode)
        out = np.empty((img.shape[0] + top + bottom, img.shape[1] + left + right) + img.shape[2:], img.dtype)
        out[...] = np.asarray(self.pad_val, dtype=img.dtype)
        out[top:top + img.shape[0], left:left + img.shape[1]] = img
        return out

    def transform(self, results: Dict) -> Dict:
        img = self._pad(results['img'], *self.padding)
        th, tw = self.size
        h, w = img.shape[:2]
        if h < th or w < tw:  # too small even after padding: pad around to the crop size
            dh, dw = max(th - h, 0), max(tw - w, 0)
            img = self._pad(img, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)
            h, w = img.shape[:2]
        y = np.random.randint(0, h - th + 1)
        x = np.random.randint(0, w - tw + 1)
        return _set_img(results, np.ascontiguousarray(img[y:y + th, x:x + tw]))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, padding={self.padding}, '
                f'pad_val={self.pad_val}, padding_mode={self.padding_mode!r})')


@TRANSFORMS.register_module()
class RandomResizedCrop(BaseTransform):
    """Crop a random area / aspect-ratio window and resize it to ``scale`` (ImageNet style).

    Args:
        scale: output ``int`` or ``(h, w)``.
        crop_ratio_range: range of the crop area as a fraction of the image area.
        aspect_ratio_range: range of the crop's width / height (sampled log-uniformly).
        max_attempts: tries to find a window inside the image before the centre-crop fallback.
        interpolation: ``mmcv.imresize`` interpolation (``'bilinear'``, ``'bicubic'``...).
        backend: ``mmcv.imresize`` backend (``'cv2'`` or ``'pillow'``).
    """

    def __init__(self, scale: SizeLike, crop_ratio_range: Tuple[float, float] = (0.08, 1.0),
                 aspect_ratio_range: Tuple[float, float] = (3. / 4., 4. / 3.), max_attempts: int = 10,
                 interpolation: str = 'bilinear', backend: str = 'cv2') -> None:
        self.scale = _as_hw(scale, 'scale')
        if not (0 < crop_ratio_range[0] <= crop_ratio_range[1] <= 1):
            raise ValueError(f'crop_ratio_range must satisfy 0 < low <= high <= 1, got {crop_ratio_range}')
        if not (0 < aspect_ratio_range[0] <= aspect_ratio_range[1]):
            raise ValueError(f'aspect_ratio_range must satisfy 0 < low <= high, got {aspect_ratio_range}')
        self.crop_ratio_range = tuple(crop_ratio_range)
        self.aspect_ratio_range = tuple(aspect_ratio_range)
        self.max_attempts = max_attempts
        self.interpolation = interpolation
        self.backend = backend

    def _crop_box(self, h: int, w: int) -> Tuple[int, int, int, int]:
        """Sample ``(y, x, crop_h, crop_w)``; falls back to the central crop of the allowed ratios."""
        area = h * w
        log_ratio = (math.log(self.aspect_ratio_range[0]), math.log(self.aspect_ratio_range[1]))
        for _ in range(self.max_attempts):
            target_area = np.random.uniform(*self.crop_ratio_range) * area
            ratio = math.exp(np.random.uniform(*log_ratio))
            cw = int(round(math.sqrt(target_area * ratio)))
            ch = int(round(math.sqrt(target_area / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                return np.random.randint(0, h - ch + 1), np.random.randint(0, w - cw + 1), ch, cw
        in_ratio = w / h
        if in_ratio < self.aspect_ratio_range[0]:
            cw, ch = w, int(round(w / self.aspect_ratio_range[0]))
        elif in_ratio > self.aspect_ratio_range[1]:
            ch, cw = h, int(round(h * self.aspect_ratio_range[1]))
        else:
            ch, cw = h, w
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def transform(self, results: Dict) -> Dict:
        img = results['img']
        y, x, ch, cw = self._crop_box(*img.shape[:2])
        crop = img[y:y + ch, x:x + cw]
        th, tw = self.scale
        import mmcv  # only this transform needs it
        img = mmcv.imresize(crop, (tw, th), interpolation=self.interpolation, backend=self.backend)
        return _set_img(results, img)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, crop_ratio_range={self.crop_ratio_range}, '
                f'aspect_ratio_range={self.aspect_ratio_range}, interpolation={self.interpolation!r})')


@TRANSFORMS.register_module()
class PackClsInputs(BaseTransform):
    """Pack an image and its label into ``dict(inputs=CHW uint8 tensor, data_samples=ClsDataSample)``.

    This is what mmengine's ``ImgDataPreprocessor`` consumes after ``pseudo_collate`` (a list of
    CHW tensors). Channel order is kept as loaded (set ``bgr_to_rgb`` in the preprocessor if the
    image was read as BGR). ``gt_label`` is taken from ``results['gt_label']`` when present; the
    metainfo holds the keys of ``meta_keys`` that exist, with ``ori_shape`` / ``img_shape``
    filled from the image when missing.
    """

    def __init__(self, meta_keys: Sequence[str] = ('sample_idx', 'img_path', 'ori_shape', 'img_shape')) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: Dict) -> Dict:
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).contiguous()
        meta = {k: results[k] for k in self.meta_keys if k in results}
        meta.setdefault('ori_shape', tuple(img.shape[:2]))
        meta.setdefault('img_shape', tuple(img.shape[:2]))
        sample = ClsDataSample(metainfo=meta)
        if results.get('gt_label') is not None:
            sample.set_gt_label(results['gt_label'])
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'
