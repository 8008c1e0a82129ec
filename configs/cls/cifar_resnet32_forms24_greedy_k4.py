# The global-form set at 24x24 (`python tools/misc/make_demo_data.py forms --size 24 --out
# data/lv_forms24_cls`): the recipe of cifar_resnet32_forms_greedy_k4.py with 0.56x the pixels and a
# channels-last network, sized so that tools/analysis/learning_quality.py's K=4 table fits a small
# CPU machine. ResNet-32 keeps 16 units, so K=2..16 all split.
_base_ = ['./cifar_resnet32_forms_greedy_k4.py']
data_root = 'data/lv_forms24_cls'
model = dict(backbone=dict(channels_last=True), split=dict(input_size=(3, 24, 24)))
# the papers' CIFAR augmentation at this size: 3-pixel reflect padding, random 24x24 crop, flip
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=24, padding=3, padding_mode='reflect'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
