# Ablation variant of cls_r18_shapes.py: squeeze-and-excitation in every block of layers 2-4.
_base_ = ['./cls_r18_shapes.py']
model = dict(backbone=dict(attention=dict(type='se', stages=(False, True, True, True))))
