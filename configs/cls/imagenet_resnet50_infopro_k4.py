# ResNet-50 on ImageNet-1k, InfoPro (softmax) with K=4 modules at cuts balanced by measured
# activation memory (no published ResNet-50 K=4 table), with the aux nets of the papers' ImageNet
# code (ConvPoolHead, ProgressiveDecoder; see imagenet_resnet101_infopro_k2.py). No lambdas are
# published for this net and K: (first, last) local module as in
# resnet50_infopro_k4_from_mmpretrain.py, reconstruction weight falling and task weight constant
# with depth, a starting point only. Recipe of imagenet_resnet50_e2e.py.
_base_ = ['./imagenet_resnet50_e2e.py']
model = dict(
    split=dict(num_modules=4, strategy='balanced'),
    local_objective=dict(type='InfoPro', loss_mode='softmax', lambda_recon=(5, 1), lambda_task=(1, 1),
                         head=dict(type='ConvPoolHead'), decoder=dict(type='ProgressiveDecoder')))
