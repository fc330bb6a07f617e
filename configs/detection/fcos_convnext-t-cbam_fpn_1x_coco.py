# FCOS on timm's ConvNeXt-T (ImageNet weights from the local Hugging Face cache: timm://convnext_tiny, never
# downloaded) with CBAM after every stage, inserted by timm's own module names after the pretrained load and
# identity-initialised (gamma = 0), so training starts from exactly the pretrained network's features.
# ConvNeXt's feature levels 1..3 (strides 8, 16, 32) feed the FPN directly; P6/P7 come from P5's output.
# attnkit train configs/detection/fcos_convnext-t-cbam_fpn_1x_coco.py  (accelerate launch -m attnkit train ... on 8 GPUs)
_base_ = ['./fcos_r50_fpn_1x_coco.py']
model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='convnext_tiny', out_indices=(1, 2, 3),
                  pretrained='timm://convnext_tiny', drop_path_rate=0.1,
                  attention=dict(type='cbam', after=['stages.0', 'stages.1', 'stages.2', 'stages.3'])),
    neck=dict(start_level=0),
)
# ConvNeXt is trained with AdamW; no weight decay on norms, biases and the layer-scale / attention gammas
optim = dict(_delete_=True, optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
             no_decay=('norm', 'bias', 'gamma'), grad_clip=dict(max_norm=35.0))
