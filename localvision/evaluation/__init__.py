"""Evaluation metrics of localvision (imports register them)."""
from .metrics import Accuracy

__all__ = ['Accuracy']
