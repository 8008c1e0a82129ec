# DeiT-S on ImageNet-1k at 224, InfoPro (softmax) with K=4 modules balanced by measured activation
# memory, with the aux nets of the papers' ImageNet code (ConvPoolHead on the 14x14 token map,
# ProgressiveDecoder reducing the 384 channels to 128 before upsampling). No lambdas are
# published for ViTs: (first, last) local module as for ResNet-50 K=4, a starting point only.
# The recipe (DeiT's) of imagenet_deit_small_e2e.py; Mixup / CutMix soft targets reach the local
# heads too.
_base_ = ['./imagenet_deit_small_e2e.py']
model = dict(split=dict(num_modules=4, strategy='balanced'),
             local_objective=dict(type='InfoPro', loss_mode='softmax', lambda_recon=(5, 1), lambda_task=(1, 1),
                                  head=dict(type='ConvPoolHead'), decoder=dict(type='ProgressiveDecoder')))
