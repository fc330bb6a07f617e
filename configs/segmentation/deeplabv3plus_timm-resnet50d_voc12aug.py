# DeepLabV3+ on timm's ResNet-50-D (deep stem, average-pool shortcuts) at output stride 8, ImageNet weights from the
# local Hugging Face cache (timm://resnet50d, never downloaded). timm's feature levels 1..4 are layer1..layer4, so
# the returned tuple is laid out as attnkit's ResNet's: [0] = layer1 (stride 4) is the decoder's low-level input
# (c1_index=0), [3] = layer4 (stride 8) feeds the ASPP neck, [2] = layer3 the auxiliary head.
_base_ = ['./deeplabv3plus_r50-d8_voc12aug.py']
model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='resnet50d', out_indices=(1, 2, 3, 4),
                  output_stride=8, pretrained='timm://resnet50d', frozen_stages=-1, norm_eval=False),
    neck=dict(in_index=3),
    decode_head=dict(in_index=3, c1_index=0),
    auxiliary_head=dict(in_index=2),
)
