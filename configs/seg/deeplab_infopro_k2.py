# InfoPro's Cityscapes setting: K=2 (the paper cuts inside layer3 of a ResNet-101; here the cut
# is balanced by measured activation memory), recon weight 1.5, task weight 1.
_base_ = ['./deeplab_infopro_k4.py']
model = dict(split=dict(num_modules=2))
