# DeiT-S on ImageNet-1k at 224, greedy supervised local learning with K=4 modules balanced by
# measured activation memory (the blocks of a ViT all cost the same: 12 blocks in about equal
# parts); each local module is trained by the cross-entropy of a pooled-token linear head
# (PoolLinearHead), the last one by the model's head. The recipe (DeiT's) of imagenet_deit_small_e2e.py;
# Mixup / CutMix soft targets reach the local heads too.
_base_ = ['./imagenet_deit_small_e2e.py']
model = dict(split=dict(num_modules=4, strategy='balanced'),
             local_objective=dict(type='Greedy', head=dict(type='PoolLinearHead')))
