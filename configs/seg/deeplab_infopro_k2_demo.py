# The demo with K=2.
_base_ = ['./deeplab_infopro_k4_demo.py']
model = dict(split=dict(num_modules=2))
