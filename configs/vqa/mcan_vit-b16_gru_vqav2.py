# MCAN-small on a ViT-B/16 patch grid (BEiT-base, Bao et al. 2022, through transformers' HFBackbone): at 224 px
# the last layer's 14x14 patch tokens are the grid (the same 14x14 cells as the ResNet-50 config at 448 px),
# CLS token dropped, no neck. Word tokens + BiGRU; VQA v2 train -> val.
#
# The weights are read from a LOCAL directory, never downloaded at run time. Get it once (needs network):
#     huggingface-cli download microsoft/beit-base-patch16-224-pt22k-ft22k \
#         --local-dir checkpoints/beit-base-patch16-224-pt22k-ft22k
# Other ViT-B/16 backbones with a transformers AutoBackbone work the same way (docs/backbones_hf.md), e.g.
# DINOv3 ViT-B/16 (facebook/dinov3-vitb16-pretrain-lvd1689m, gated: accept its licence on the Hub first; ImageNet
# mean/std: drop `normalize` below): --cfg-options model.backbone.model_path=checkpoints/dinov3-vitb16
# BEiT normalises with mean = std = 0.5 (its preprocessor_config.json), hence `normalize` (0..255 scale).
_base_ = ['../_base_/models/mcan_r50.py', '../_base_/datasets/vqav2.py', '../_base_/default_runtime.py']
img_size = 224
model = dict(
    backbone=dict(_delete_=True, type='HFBackbone', model_path='checkpoints/beit-base-patch16-224-pt22k-ft22k',
                  out_indices=(-1,), frozen_stages=-1),
    normalize=dict(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5)))
data = dict(train=dict(dataset=dict(pipeline=[dict(type='Resize', height=img_size, width=img_size)])),
            val=dict(dataset=dict(pipeline=[dict(type='Resize', height=img_size, width=img_size)])))
optim = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.98), weight_decay=0.0),
             lr_mult={'backbone': 0.1}, grad_clip=dict(_delete_=True, max_norm=10.0))
schedule = dict(by_epoch=True, max_epochs=13, warmup_iters=2000, warmup_ratio=0.25, policy='step',
                milestones=(10, 12), gamma=0.2)
runtime = dict(mixed_precision='bf16', channels_last=False)  # a ViT has one conv: channels_last buys nothing
train_cfg = dict(eval_interval=1, checkpoint_interval=1)
