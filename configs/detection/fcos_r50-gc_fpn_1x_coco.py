# FCOS with a global-context (GCNet) block in every block of layers 2-4, identity-initialised.
_base_ = ['./fcos_r50_fpn_1x_coco.py']
model = dict(backbone=dict(attention=dict(type='gc', stages=(False, True, True, True)), identity_init=True))
