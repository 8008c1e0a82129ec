"""Data structures passed between task models, executors and the module-parallel stages."""
from .local_context import LocalContext, LocalUnits, is_local_model

__all__ = ['LocalContext', 'LocalUnits', 'is_local_model']
