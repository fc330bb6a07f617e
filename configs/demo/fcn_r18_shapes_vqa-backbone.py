# Stage 1 of the demo VQA recipe: pre-train the VQA model's backbone (ResNet-18, base 32, layer3 = 8x8 grid
# at 128 px) on the demo *segmentation* masks of the training images, the way VQA models start from a detector
# or ImageNet backbone. 88 s with 2 threads (171 CPU-seconds); stage 2 (configs/demo/mcan_r18_gru_shapes.py) loads
# work_dirs/fcn_r18_shapes_vqa-backbone/model.safetensors into its backbone.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/shapes_voc_seg.py']
model = dict(
    type='Segmentor',
    backbone=dict(type='ResNet', depth=18, base_channels=32, out_indices=(0, 2)),
    decode_head=dict(type='fcn', in_index=1, channels=128, num_convs=0, concat_input=False, dropout=0.0),
    test_mode='whole',
)
data = dict(train=dict(batch_size=16, drop_last=True), val=dict(batch_size=32))
runtime = dict(mixed_precision='no', log_interval=50)
optim = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.002, weight_decay=1e-4))
schedule = dict(by_epoch=False, max_epochs=None, max_iters=600, warmup_iters=20, warmup_ratio=0.1, policy='poly',
                power=1.0, min_lr_ratio=0.05)
train_cfg = dict(eval_interval=600, checkpoint_interval=600)
