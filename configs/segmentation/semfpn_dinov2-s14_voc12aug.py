# Semantic FPN on DINOv2 ViT-S/14 (Oquab et al. 2023) through transformers (HFBackbone), with ViTDet's simple
# feature pyramid (Li et al. 2022) turning the single stride-14 grid into strides 4, 8, 16, 32; 512x512 crops,
# 20k iterations, AdamW with the backbone at 0.1x lr.
#
# The weights are read from a LOCAL directory, never downloaded at run time. Get it once (needs network):
#     huggingface-cli download facebook/dinov2-small --local-dir checkpoints/dinov2-small
# (or `hf download ...`; any DINOv2 size works: dinov2-base/-large/-giant, or dinov2-with-registers-*).
# Another directory: --cfg-options model.backbone.model_path=/path/to/dir
#
# Sizes: images are zero-padded bottom/right to a multiple of 14 (a 512 crop -> 518 -> a 37x37 grid); the
# pyramid first resamples the stride-14 grid to stride 16 (37x37 -> round(37 * 14 / 16) = 32x32) and then
# builds 128/64/32/16-cell maps (docs/backbones_hf.md). DINOv2 uses ImageNet's mean/std, the task default.
_base_ = ['../_base_/models/semfpn_r50.py', '../_base_/datasets/voc12aug.py',
          '../_base_/schedules/schedule_poly_40k.py', '../_base_/default_runtime.py']
model = dict(
    backbone=dict(_delete_=True, type='HFBackbone', model_path='checkpoints/dinov2-small', out_indices=(-1,),
                  frozen_stages=-1),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', out_channels=256, scale_factors=(4, 2, 1, 0.5),
              norm='ln'),
)
schedule = dict(max_iters=20000, warmup_iters=500, warmup_ratio=1e-3)
# ViT fine-tuning: AdamW; no weight decay on norms, biases, position tables, CLS/mask tokens, layer scales
optim = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
             lr_mult={'backbone': 0.1}, no_decay=('norm', 'bias', 'pos', 'cls', 'mask', 'lambda'))
train_cfg = dict(eval_interval=2000, checkpoint_interval=2000)
