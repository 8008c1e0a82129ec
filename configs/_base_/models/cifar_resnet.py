# A CIFAR-style ResNet (timm-registered `cifar_resnet{20,32,44,56,110}`) classified with local
# learning (LocalImageClassifier: mmpretrain's ImageClassifier keys plus split / local_objective).
# split.num_modules=1 is end-to-end training through the same code path. The head reads timm's
# own pooling (neck=None); its in_channels follow the backbone. The data preprocessor (mean, std,
# channel order) comes from the data set's base (top-level data_preprocessor, as in mmpretrain).
model = dict(
    type='LocalImageClassifier',
    backbone=dict(type='StagedTimm', model_name='cifar_resnet32', pretrained=False),
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10, loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    split=dict(input_size=(3, 32, 32)),  # num_modules defaults to 1
    local_objective=dict(type='Greedy', head=dict(type='ConvFCHead')),
    executor=dict(type='PerModuleBackward'),
)
