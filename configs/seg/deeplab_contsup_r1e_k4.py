# ContSup context supply on top of deeplab_infopro_k4.py: at every cut the next module receives
# h.detach() + a 1x1 projection of the finished module's input (R1) + a small encoder of the
# image pooled to the module's resolution (E); the projections are trained by the next module's
# loss and stay part of the model at inference (so export to stock mmseg is refused).
_base_ = ['./deeplab_infopro_k4.py']
model = dict(context=dict(type='ContSup', variant='R1E', strided_encoder=True))  # full resolution would not fit at 512x1024
