# FCOS with CBAM in every block of layers 2-4; identity-initialised (residual gamma = 0) because the backbone is
# ImageNet-pretrained, so training starts from exactly the pretrained network's features.
_base_ = ['./fcos_r50_fpn_1x_coco.py']
model = dict(backbone=dict(attention=dict(type='cbam', stages=(False, True, True, True)), identity_init=True))
