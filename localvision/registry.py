"""Registries of localvision (scope ``localvision``).

Each is a child of mmengine's root registry of the same kind, so a config with
``default_scope='localvision'`` finds localvision's own components and falls back to
mmengine's (``ImgDataPreprocessor``, ``OptimWrapper``, hooks, ...). Transforms also fall back to
mmcv's (``LoadImageFromFile``, ``RandomFlip``, ``Resize``...), which mmcv registers in mmengine's root
registry. mmcv is optional here: without it the split backbones, local objectives and the engine
work (a machine that only builds models, e.g. for ``tools/analysis/backbone_support.py``).

The task models are registered in the libraries' own registries instead (their configs keep
``default_scope='mmpretrain'`` / ``'mmseg'`` / ``'mmdet'``), see ``localvision.cls``,
``localvision.seg`` and ``localvision.det``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

try:
    import mmcv.transforms  # noqa: F401  (registers mmcv's transforms in MMENGINE_TRANSFORMS)
except ModuleNotFoundError as e:
    if e.name != 'mmcv':  # mmcv is installed but broken (e.g. cv2 missing): say so
        raise

SCOPE = 'localvision'

MODELS = Registry('model', parent=MMENGINE_MODELS, scope=SCOPE, locations=['localvision.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope=SCOPE)
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope=SCOPE)
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope=SCOPE)
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR, scope=SCOPE)
DATA_SAMPLERS = Registry('data sampler', parent=MMENGINE_DATA_SAMPLERS, scope=SCOPE)
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope=SCOPE, locations=['localvision.engine'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope=SCOPE,
                          locations=['localvision.engine'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope=SCOPE,
                          locations=['localvision.engine'])
# The rest of mmengine's kinds, so that building them under scope 'localvision' needs no fallback.
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope=SCOPE)
RUNNER_CONSTRUCTORS = Registry('runner constructor', parent=MMENGINE_RUNNER_CONSTRUCTORS, scope=SCOPE)
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope=SCOPE)
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, scope=SCOPE)
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope=SCOPE)
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS, scope=SCOPE)
WEIGHT_INITIALIZERS = Registry('weight initializer', parent=MMENGINE_WEIGHT_INITIALIZERS, scope=SCOPE)
TASK_UTILS = Registry('task util', parent=MMENGINE_TASK_UTILS, scope=SCOPE)
VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS, scope=SCOPE)
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS, scope=SCOPE)
LOG_PROCESSORS = Registry('log_processor', parent=MMENGINE_LOG_PROCESSORS, scope=SCOPE)

# localvision's own kinds. They have no parent, so they build the same way whatever the
# config's default scope is (localvision, mmseg or mmdet).
OBJECTIVES = Registry('local objective', scope=SCOPE, locations=['localvision.models.objectives'])
AUX_HEADS = Registry('auxiliary head', scope=SCOPE, locations=['localvision.models.objectives'])
EXECUTORS = Registry('local executor', scope=SCOPE, locations=['localvision.engine'])
