# Ablation variant of cls_r18_shapes.py: CBAM (channel + spatial attention) in every block of layers 2-4.
_base_ = ['./cls_r18_shapes.py']
model = dict(backbone=dict(attention=dict(type='cbam', stages=(False, True, True, True))))
