# Shape classification on the object crops of the "shapes" demo data (`attnkit data demo` writes data/demo/cls:
# ImageFolder layout, 64x64 crops, 4 classes: circle, square, star, triangle; ~2500 train / ~500 val crops).
# A half-width ResNet-18 (base_channels=32) trained from scratch with global average pooling and a linear head.
# Target: top-1 >= 0.95 on the val crops in <= 5 CPU-minutes (docs/classification.md). The ablation variants
# configs/demo/cls_r18-{se,cbam,lip,attnpool,class_attention,ml_decoder}_shapes.py change one part of this file;
# tools/ablate_classification.py runs them over seeds.
_base_ = ['../_base_/default_runtime.py']
task = 'classification'
data_root = 'data/demo'
img_size = 64
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, base_channels=32, out_indices=(3,)),
    head=dict(type='linear'),
    # the crops are small and the classes few: mild smoothing, no mixup (see docs/classification.md for mixup)
    label_smoothing=0.1,
    topk=3,
)
# shapes are drawn at random angles: vertical flips and 90-degree turns are as valid as horizontal flips
train_pipeline = [
    dict(type='RandomResizedCrop', size=(img_size, img_size), scale=(0.6, 1.0), ratio=(0.8, 1.25)),
    dict(type='HorizontalFlip', p=0.5),
    dict(type='VerticalFlip', p=0.5),
    dict(type='RandomRotate90', p=0.5),
]
test_pipeline = [dict(type='Resize', height=img_size, width=img_size)]
data = dict(
    train=dict(dataset=dict(type='ImageFolder', root=f'{data_root}/cls/train', pipeline=train_pipeline),
               batch_size=64, num_workers=1, drop_last=True),
    val=dict(dataset=dict(type='ImageFolder', root=f'{data_root}/cls/val', pipeline=test_pipeline),
             batch_size=100, num_workers=1),
    test=None,
)
evaluator = dict(type='Accuracy', topk=(1, 2))
runtime = dict(log_interval=10)
optim = dict(_delete_=True, optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
             no_decay=('norm', 'bias', 'pos', 'scale', 'gamma'))
schedule = dict(by_epoch=True, max_epochs=8, warmup_iters=40, warmup_ratio=0.01, policy='cosine', min_lr_ratio=0.01)
train_cfg = dict(eval_interval=4, checkpoint_interval=4)
