# CIFAR-10 from a local copy of the python batches (cifar-10-batches-py); never downloaded.
dataset_type = 'CIFAR10Dataset'
data_root = 'data/cifar10'
num_classes = 10
mean = [125.307, 122.961, 113.8575]
std = [51.5865, 50.847, 51.255]

train_pipeline = [
    dict(type='RandomCrop', size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackClsInputs'),
]
test_pipeline = [dict(type='PackClsInputs')]
train_dataloader = dict(
    batch_size=1024,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, test_mode=False, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1000,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
