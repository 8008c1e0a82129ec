"""Models: the stage split, local objectives, task models and backbones."""
from . import backbones, objectives, split  # noqa: F401
from .classifiers import LocalImageClassifier
from .local_model import LocalLearningModel

__all__ = ['LocalImageClassifier', 'LocalLearningModel']
