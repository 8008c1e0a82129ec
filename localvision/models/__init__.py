"""Models: the stage split, local objectives, the mechanism and backbones (the task models are in
``localvision.cls`` / ``seg`` / ``det``)."""
from . import backbones, objectives, split  # noqa: F401
from .local_model import LocalLearningModel

__all__ = ['LocalLearningModel']
