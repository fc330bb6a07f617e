# MCAN-small on a timm ConvNeXt-T grid: the last stage's map (stride 32: 14x14 at 448 px, the same cells as the
# ResNet-50 config) with ImageNet weights from the local Hugging Face cache (timm://convnext_tiny, never
# downloaded); stem + first stage frozen, the rest at 0.1x lr. Word tokens + BiGRU; VQA v2 train -> val.
_base_ = ['./mcan_r50_gru_vqav2.py']
model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='convnext_tiny', out_indices=(3,),
                  pretrained='timm://convnext_tiny', frozen_stages=1))
runtime = dict(channels_last=False)
