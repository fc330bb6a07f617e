# FCOS on a half-width ResNet-18 (base_channels=32) with CBAM in layers 2-4 and a 3-level FPN (strides 8, 16, 32), trained from scratch on the
# "shapes" demo data (`attnkit data demo` writes data/demo: 128x128 images, 1000 train / 200 val, 4 classes).
# Target: COCO mAP@[.5:.95] >= 0.50 on the demo val split, training in <= 15 min on 2 CPU cores
# (docs/bench/detection.md: AP 0.70; 6.3 CPU-minutes). On a CPU shared with other jobs run it with OMP_NUM_THREADS=1:
# oversubscribed OpenMP threads spin-wait and made each step ~10x slower.
_base_ = ['../_base_/default_runtime.py']
task = 'detection'
data_root = 'data/demo'
model = dict(
    type='Detector',
    backbone=dict(type='ResNet', depth=18, base_channels=32, out_indices=(1, 2, 3),
                  attention=dict(type='cbam', stages=(False, True, True, True))),
    neck=dict(type='FPN', out_channels=64, num_outs=3, start_level=0),
    # objects are 15-58 px: their centre locations lie <= ~30 px from the box sides, so the regress ranges
    # of the 800-px COCO setting (64/128/256/512) are scaled down to the 128-px images
    head=dict(type='FCOSHead', feat_channels=64, stacked_convs=3, strides=(8, 16, 32),
              regress_ranges=((-1, 16), (16, 32), (32, 1e8)), center_sampling=True, center_sample_radius=1.5,
              norm_on_bbox=True, score_thr=0.05, nms_pre=1000, iou_thr=0.6, max_per_img=100),
)
# shapes are rotated at random, so vertical flips and 90-degree turns are as valid as horizontal flips
train_pipeline = [
    dict(type='HorizontalFlip', p=0.5),
    dict(type='VerticalFlip', p=0.5),
    dict(type='RandomRotate90', p=0.5),
]
data = dict(
    train=dict(dataset=dict(type='CocoDetection', ann_file=f'{data_root}/coco/annotations/instances_train.json',
                            img_dir=f'{data_root}/voc/JPEGImages', pipeline=train_pipeline, filter_empty=True),
               batch_size=16, num_workers=1),
    val=dict(dataset=dict(type='CocoDetection', ann_file=f'{data_root}/coco/annotations/instances_val.json',
                          img_dir=f'{data_root}/voc/JPEGImages', pipeline=[]),
             batch_size=16, num_workers=1),
    test=None,
)
evaluator = dict(type='CocoMetric')
runtime = dict(log_interval=20)
optim = dict(_delete_=True, optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05), no_decay=('norm', 'bias', 'scale'),
             grad_clip=dict(max_norm=35.0))
schedule = dict(by_epoch=True, max_epochs=10, warmup_iters=100, warmup_ratio=0.01, policy='cosine', min_lr_ratio=0.01)
train_cfg = dict(eval_interval=10, checkpoint_interval=5)
