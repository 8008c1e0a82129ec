"""localvision: supervised local learning for timm backbones in OpenMMLab."""
__version__ = '0.1.0'
