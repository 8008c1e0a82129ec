"""Local objectives (registered in ``localvision.registry.OBJECTIVES``) and their aux heads."""
from .auglocal import AugLocal
from .aux_heads import ConvFCHead, ConvPoolHead, PoolLinearHead
from .base import (LocalContext, LocalObjective, build_aux_head, build_objective, per_module_configs, pixel_stats,
                   registered_objectives, scheduled_value)
from .contrastive import supervised_contrastive_loss
from .decoders import ProgressiveDecoder, ReconDecoder
from .dgl import DGLHead, DGL
from .greedy import Greedy
from .hpff import HPFF, PatchFusion
from .infopro import InfoPro
from .man import MAN

__all__ = ['LocalContext', 'LocalObjective', 'build_aux_head', 'build_objective', 'per_module_configs', 'pixel_stats',
           'registered_objectives', 'scheduled_value', 'supervised_contrastive_loss', 'Greedy',
           'DGL', 'InfoPro', 'ConvFCHead', 'PoolLinearHead', 'DGLHead', 'ReconDecoder',
           'ConvPoolHead', 'ProgressiveDecoder', 'AugLocal', 'MAN', 'HPFF', 'PatchFusion']
