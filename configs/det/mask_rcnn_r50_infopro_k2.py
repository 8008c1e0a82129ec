# Mask R-CNN-R50 with K=2 modules.
_base_ = ['./mask_rcnn_r50_infopro_k4.py']
model = dict(split=dict(num_modules=2))
