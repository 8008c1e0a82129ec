# ResNet-50 on ImageNet-1k, greedy local learning with K=4 modules at cuts balanced by measured
# activation memory: each module trained by its own classifier (global pooling + linear), no
# reconstruction. The baseline InfoPro is compared with (imagenet_resnet50_infopro_k4.py); recipe of
# imagenet_resnet50_e2e.py.
_base_ = ['./imagenet_resnet50_e2e.py']
model = dict(split=dict(num_modules=4, strategy='balanced'),
             local_objective=dict(type='Greedy', head=dict(type='PoolLinearHead')))
