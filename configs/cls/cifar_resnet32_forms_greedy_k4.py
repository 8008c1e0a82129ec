# ResNet-32 (CIFAR style, from scratch) on the generated global-form set (8 classes, 32x32;
# `python tools/misc/make_demo_data.py forms`), greedy local learning with K=4 modules at the
# published ResNet-32 cuts; the recipe of the shapes demo. The default config of
# tools/analysis/learning_quality.py, which swaps the objective per method.
_base_ = ['./cifar_resnet32_shapes_greedy_k4.py']
data_root = 'data/lv_forms_cls'
num_classes = 8
data_preprocessor = dict(num_classes=num_classes)
model = dict(head=dict(num_classes=num_classes))
# the papers' CIFAR augmentation: 4-pixel reflect padding (on the plain background, zero padding
# would add a black frame that slows learning), random 32x32 crop, horizontal flip
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=32, padding=4, padding_mode='reflect'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
