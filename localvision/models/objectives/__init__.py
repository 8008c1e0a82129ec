"""Local objectives (registered in ``localvision.registry.OBJECTIVES``) and their aux heads."""
from .aux_heads import ConvFCHead, PoolLinearHead
from .base import LocalContext, LocalObjective, build_objective, per_module_configs, registered_objectives
from .greedy import GreedyObjective

__all__ = ['LocalContext', 'LocalObjective', 'build_objective', 'per_module_configs', 'registered_objectives',
           'GreedyObjective', 'ConvFCHead', 'PoolLinearHead']
