# DANet on a quarter-width dilated ResNet-18 (output stride 8), trained from scratch on the "shapes" demo data
# (`attnkit data demo` writes data/demo; 128x128 images, 1000 train / 200 val). About 10 minutes on 2 CPU cores.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/shapes_voc_seg.py']
model = dict(
    type='Segmentor',
    backbone=dict(type='ResNet', depth=18, base_channels=16, out_indices=(0, 1, 2, 3), output_stride=8),
    decode_head=dict(type='danet', in_index=3, channels=32, pam=dict(type='danet_pam', reduction=8),
                     cam=dict(type='danet_cam'), identity_init=True, aux_weight=0.5, dropout=0.1),
    auxiliary_head=dict(type='fcn', in_index=2, channels=16, num_convs=1, concat_input=False, dropout=0.1,
                        loss_weight=0.4, loss_name='loss_aux'),
    test_mode='whole',
)
train_pipeline = [
    dict(type='RandomResizeRatio', ratio_range=(0.9, 1.25)),
    dict(type='RandomCropCatMax', height=128, width=128, cat_max_ratio=1.0),
    dict(type='HorizontalFlip', p=0.5),
    dict(type='PadIfNeeded', min_height=128, min_width=128, position='top_left', border_mode=0, fill=0,
         fill_mask=255),
]
data = dict(train=dict(dataset=dict(pipeline=train_pipeline)))
runtime = dict(mixed_precision='no', log_interval=25)
optim = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.003, weight_decay=1e-4))
schedule = dict(by_epoch=False, max_epochs=None, max_iters=1200, warmup_iters=50, warmup_ratio=0.01, policy='poly',
                power=0.9, min_lr_ratio=0.0)
train_cfg = dict(eval_interval=600, checkpoint_interval=600)
infer_cfg = dict(attn_point=None)  # attnkit infer: query pixel (y, x) of the PAM heat map (None = centre)
