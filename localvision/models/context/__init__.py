"""Context supply at the cuts of a split network (ContSup), registered in ``CONTEXTS``."""
from .builder import CONTEXTS, build_context, registered_contexts
from .contsup import VARIANTS, ContSup, CutContext, ImageEncoder, InputProjection, add_to_features, parse_variant

__all__ = ['CONTEXTS', 'build_context', 'registered_contexts', 'VARIANTS', 'ContSup', 'CutContext', 'ImageEncoder',
           'InputProjection', 'add_to_features', 'parse_variant']
