# Multi-label classification on Pascal VOC 2007 (the 20 classes; an image's target is the set of classes of its
# boxes, "difficult"-only classes ignored): ResNet-50 + the ML-Decoder query head (Ridnik et al., WACV 2023), binary
# cross-entropy, mAP on VOC2007 test. Layout: data/VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}.
# Start from an ImageNet checkpoint: --cfg-options model.backbone.pretrained=work_dirs/cls_r50-cbam_imagenet/model.safetensors
# (with the CBAM config's backbone) or any torchvision-layout ResNet-50 file; nothing is downloaded.
_base_ = ['../_base_/default_runtime.py']
task = 'classification'
data_root = 'data/VOCdevkit/VOC2007'
img_size = 448
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=50, out_indices=(3,), pretrained=None),
    head=dict(type='ml_decoder'),  # paper widths: embed_dim 768, 8 heads, ffn 2048, one query per class
    multi_label=True,
)
train_pipeline = [
    dict(type='RandomResizedCrop', size=(img_size, img_size), scale=(0.5, 1.0)),
    dict(type='HorizontalFlip', p=0.5),
    dict(type='ColorJitter', brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, p=0.5),
]
test_pipeline = [dict(type='Resize', height=img_size, width=img_size)]
data = dict(
    train=dict(dataset=dict(type='VOCMultiLabel', root=data_root, split_file='ImageSets/Main/trainval.txt',
                            pipeline=train_pipeline),
               batch_size=32, num_workers=8, drop_last=True),
    val=dict(dataset=dict(type='VOCMultiLabel', root=data_root, split_file='ImageSets/Main/test.txt',
                          pipeline=test_pipeline),
             batch_size=32, num_workers=8),
    test=None,
)
evaluator = dict(type='MultiLabelMAP')
runtime = dict(mixed_precision='bf16', log_interval=20)
optim = dict(optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4), lr_mult=dict(backbone=0.1))
schedule = dict(by_epoch=True, max_epochs=40, warmup_iters=200, warmup_ratio=0.01, policy='cosine', min_lr_ratio=0.01)
train_cfg = dict(eval_interval=5, checkpoint_interval=1, ema=dict(_delete_=True, momentum=0.0002))
