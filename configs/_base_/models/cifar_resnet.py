# A CIFAR-style ResNet (timm-registered `cifar_resnet{20,32,44,56,110}`) classified with local
# learning. split.num_modules=1 is end-to-end training through the same code path.
model = dict(
    type='LocalImageClassifier',
    data_preprocessor=dict(
        type='ImgDataPreprocessor',
        mean=[125.307, 122.961, 113.8575],
        std=[51.5865, 50.847, 51.255],
        bgr_to_rgb=False),
    backbone=dict(type='StagedTimm', model_name='cifar_resnet32', pretrained=False),
    num_classes=10,
    split=dict(input_size=(3, 32, 32)),  # num_modules defaults to 1
    local_objective=dict(type='Greedy', head=dict(type='ConvFCHead')),
    executor=dict(type='PerModuleBackward'),
)
