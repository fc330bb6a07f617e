# Semantic FPN (Kirillov et al. 2019): ResNet-50 (output stride 32) + FPN (256) + the semantic FPN head (128).
model = dict(
    type='Segmentor',
    backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), output_stride=32,
                  pretrained='torchvision://resnet50', frozen_stages=-1, norm_eval=False),
    neck=dict(type='FPN', out_channels=256, num_outs=4),
    decode_head=dict(type='semantic_fpn', in_index=(0, 1, 2, 3), feature_strides=(4, 8, 16, 32), channels=128,
                     dropout=0.1),
    test_mode='whole',
)
