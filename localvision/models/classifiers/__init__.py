from .local_classifier import LocalImageClassifier

__all__ = ['LocalImageClassifier']
