# RetinaNet-R50 with K=2 modules (the cut balanced by measured activation memory).
_base_ = ['./retinanet_r50_infopro_k4.py']
model = dict(split=dict(num_modules=2))
