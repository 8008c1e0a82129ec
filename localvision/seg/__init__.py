"""Semantic segmentation with local learning, as mmseg components (registered in mmseg's
registries: mmseg configs keep ``_scope_='mmseg'``).

Configs pull this in with ``custom_imports=dict(imports=['localvision.seg'])``;
``import localvision`` alone never imports mmseg.
"""
from .datasets import SyntheticSegDataset, check_label_files
from .local_encoder_decoder import LocalEncoderDecoder
from .objectives import InfoProSeg, SegAuxHead, SegGreedy

__all__ = ['LocalEncoderDecoder', 'InfoProSeg', 'SegGreedy', 'SegAuxHead',
           'SyntheticSegDataset', 'check_label_files']
