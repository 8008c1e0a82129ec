# ResNet-110 on CIFAR-10, ContSup R1 (context supply at every cut) on greedy local learning, K=4.
_base_ = ['./cifar_resnet110_greedy_k4.py']
model = dict(context=dict(type='ContSup', variant='R1'))
