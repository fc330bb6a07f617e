# Ablation variant of cls_r18_shapes.py: CaiT class-attention head (a class token reads the layer4 map through two
# class-attention blocks) instead of global average pooling + linear.
_base_ = ['./cls_r18_shapes.py']
model = dict(head=dict(_delete_=True, type='class_attention', depth=2))
