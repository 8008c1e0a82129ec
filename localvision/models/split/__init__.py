"""Turning a timm backbone into K gradient-isolated modules."""
from .block_sequence import BlockInfo, BlockSequence, to_block_sequence
from .cuts import balanced_cuts, equal_cuts, module_ranges, validate_cuts
from .profiling import SavedTensorCounter, profile_saved_bytes
from .staged_timm import StagedTimm, create_timm_model

__all__ = ['BlockInfo', 'BlockSequence', 'to_block_sequence', 'balanced_cuts', 'equal_cuts', 'module_ranges',
           'validate_cuts', 'SavedTensorCounter', 'profile_saved_bytes', 'StagedTimm', 'create_timm_model']
