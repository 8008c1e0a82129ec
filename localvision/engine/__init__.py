"""Execution of split models (per-module backward), data parallelism, training-loop components."""
from .distributed import LocalDistributedDataParallel, UnitGradSync
from .executors import JointBackward, PerModuleBackward, uncounted
from .hooks import PeakMemoryHook
from .interrupt import LocalEpochBasedTrainLoop, StopAtIterationHook, StopOnSignal, TrainingInterrupted
from .optim import MixedPrecisionOptimWrapper

__all__ = ['PerModuleBackward', 'JointBackward', 'uncounted', 'LocalDistributedDataParallel', 'UnitGradSync',
           'PeakMemoryHook', 'LocalEpochBasedTrainLoop', 'StopAtIterationHook', 'StopOnSignal', 'TrainingInterrupted',
           'MixedPrecisionOptimWrapper']
