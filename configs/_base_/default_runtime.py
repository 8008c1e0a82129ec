# Runtime of the classification configs: mmpretrain's own (default_scope='mmpretrain', its hooks
# and UniversalVisualizer), plus localvision's classifier (LocalImageClassifier, registered in
# mmpretrain's MODELS by `localvision.cls`), a seed, and the distributed backend chosen by device.
# localvision's own hooks are referenced with their scope, e.g. dict(type='localvision.PeakMemoryHook').
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['localvision.cls'], allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2, save_last=True),
)
env_cfg = dict(
    # 'auto': nccl with CUDA, gloo without (resolved by tools/train.py)
    dist_cfg=dict(backend='auto'),
)
randomness = dict(seed=0)
