# Ablation variant of cls_r18_shapes.py: ML-Decoder head (one learned query per class cross-attends to the layer4
# map) instead of global average pooling + linear; widths scaled down from the paper's 768/2048 to the 256-channel
# half-width ResNet-18.
_base_ = ['./cls_r18_shapes.py']
model = dict(head=dict(_delete_=True, type='ml_decoder', embed_dim=256, heads=4, ffn_dim=512, depth=1))
