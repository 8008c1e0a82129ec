# ViT-B/16 on ImageNet-1k at 224, greedy supervised local learning with K=4 modules balanced by
# measured activation memory; each local module is trained by the cross-entropy of a pooled-token
# linear head (PoolLinearHead), the last one by the model's head. The recipe (DeiT's) of
# imagenet_vit_base_e2e.py.
_base_ = ['./imagenet_vit_base_e2e.py']
model = dict(split=dict(num_modules=4, strategy='balanced'),
             local_objective=dict(type='Greedy', head=dict(type='PoolLinearHead')))
