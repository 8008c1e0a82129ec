"""Data structures passed between datasets, models, executors and metrics."""
from .cls_data_sample import ClsDataSample
from .local_context import LocalContext, LocalUnits, is_local_model

__all__ = ['ClsDataSample', 'LocalContext', 'LocalUnits', 'is_local_model']
