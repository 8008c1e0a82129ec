# The demo's end-to-end baseline: same network, data and schedule, K=1.
_base_ = ['./deeplab_infopro_k4_demo.py']
model = dict(split=dict(num_modules=1), local_objective=None)
