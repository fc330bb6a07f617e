# Ablation variant of cls_r18_shapes.py: CLIP's attention pooling head instead of global average pooling + linear.
# 64-px crops give a 2x2 layer4 map (stride 32): the positional embeddings are learned for that grid.
_base_ = ['./cls_r18_shapes.py']
model = dict(head=dict(_delete_=True, type='attnpool', feat_size=2))
