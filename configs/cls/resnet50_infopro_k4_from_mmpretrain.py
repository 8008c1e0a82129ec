_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py']
custom_imports = dict(imports=['localvision.cls'], allow_failed_imports=False)
model = dict(type='LocalImageClassifier', backbone=dict(_delete_=True, type='StagedTimm', model_name='resnet50'),
             split=dict(num_modules=4),
             local_objective=dict(type='InfoPro', lambda_recon=(5, 1), lambda_task=(1, 1),
                                  head=dict(type='ConvPoolHead'), decoder=dict(type='ProgressiveDecoder')))
