# The instance-segmentation demo's end-to-end baseline: same network, data and schedule, K=1.
_base_ = ['./mask_rcnn_r18_infopro_k2_demo.py']
model = dict(split=dict(num_modules=1), local_objective=None)
