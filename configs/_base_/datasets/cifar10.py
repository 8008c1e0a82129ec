# CIFAR-10 with mmpretrain's CIFAR10 data set, from a local copy of the python batches
# (data/cifar10/cifar-10-batches-py); never downloaded (download=False).
dataset_type = 'CIFAR10'
data_root = 'data/cifar10'
num_classes = 10
# mmpretrain's CIFAR10 gives RGB arrays: no channel swap. Mean and std as in the papers' code
# (InfoPro / ContSup train.py: mean (125.3, 123.0, 113.9), std (63.0, 62.1, 66.7)).
data_preprocessor = dict(
    num_classes=num_classes,
    mean=[125.3, 123.0, 113.9],
    std=[63.0, 62.1, 66.7],
    to_rgb=False)

# the papers' augmentation: 4-pixel reflect padding, random 32x32 crop, horizontal flip
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4, padding_mode='reflect'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=1024,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', download=False, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1000,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='test', download=False, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
