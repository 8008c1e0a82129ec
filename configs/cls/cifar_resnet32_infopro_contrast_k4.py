# ResNet-32 on CIFAR-10, InfoPro (contrast: supervised contrastive, temperature 0.07) with K=4.
_base_ = ['./cifar_resnet32_infopro_softmax_k4.py']
model = dict(local_objective=dict(loss_mode='contrast', temperature=0.07))
