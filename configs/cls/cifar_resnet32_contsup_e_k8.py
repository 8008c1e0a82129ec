# ResNet-32 on CIFAR-10, ContSup E (context supply at every cut) on greedy local learning, K=8.
_base_ = ['./cifar_resnet32_greedy_k8.py']
model = dict(context=dict(type='ContSup', variant='E'))
