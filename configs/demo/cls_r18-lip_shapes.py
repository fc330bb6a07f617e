# Ablation variant of cls_r18_shapes.py: attention-guided downsampling, LIP (Local Importance-based Pooling, Gao et
# al., ICCV 2019) in place of the stem max-pool and the stride-2 convolutions of layers 2-4, as LIP-ResNet does.
_base_ = ['./cls_r18_shapes.py']
model = dict(backbone=dict(downsample=dict(type='lip', places=('stem', 'layer2', 'layer3', 'layer4'))))
