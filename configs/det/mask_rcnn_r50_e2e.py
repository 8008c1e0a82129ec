# Mask R-CNN-R50, the end-to-end baseline through the same code path (K=1).
_base_ = ['./mask_rcnn_r50_infopro_k4.py']
model = dict(split=dict(num_modules=1), local_objective=None)
