# ResNet-32 on CIFAR-10, ContSup R1 (context supply at every cut) on greedy local learning, K=16.
_base_ = ['./cifar_resnet32_greedy_k16.py']
model = dict(context=dict(type='ContSup', variant='R1'))
