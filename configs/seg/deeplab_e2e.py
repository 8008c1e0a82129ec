# The end-to-end baseline through the same code path (K=1: one module, no local objective), with
# the usual single optimizer step after the backward.
_base_ = ['./deeplab_infopro_k4.py']
model = dict(split=dict(num_modules=1), local_objective=None, executor=dict(step_in_backward=False))
