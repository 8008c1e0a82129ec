# The papers' CIFAR recipe (InfoPro / ContSup train.py --cos_lr): SGD Nesterov 0.9, weight decay
# 1e-4, batch 1024 / lr 0.8, 160 epochs of cosine decay, the learning rate set once per epoch;
# over the first 10 epochs it rises linearly from 0.01 to the cosine curve. Here: the cosine over
# all 160 epochs times a linear factor from 0.01 / 0.8 to 1 at epoch 10 (mmengine chains
# overlapping schedulers by multiplying them); per epoch within 0.008 of the papers' values.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.8, momentum=0.9, nesterov=True, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01 / 0.8, by_epoch=True, begin=0, end=11),
    dict(type='CosineAnnealingLR', T_max=160, by_epoch=True, begin=0, end=160),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=160, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=1024)
