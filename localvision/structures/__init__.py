"""Data structures passed between datasets, models and metrics."""
from .cls_data_sample import ClsDataSample

__all__ = ['ClsDataSample']
