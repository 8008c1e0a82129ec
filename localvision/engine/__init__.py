"""Execution of split models (per-module backward) and training-loop components."""
from .executors import JointBackward, PerModuleBackward, uncounted

__all__ = ['PerModuleBackward', 'JointBackward', 'uncounted']
