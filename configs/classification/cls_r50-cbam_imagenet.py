# ImageNet-1k classification: ResNet-50 with CBAM in every block (Woo et al., ECCV 2018), global average pooling and a
# linear head; the pre-training recipe whose checkpoint feeds `pretrained=` of the detection, segmentation and VQA
# backbones (attention parameters included). ImageFolder layout (the usual "train/<wnid>/*.JPEG, val/<wnid>/*.JPEG";
# sort the val images into class folders first, e.g. with the valprep.sh script of the PyTorch ImageNet example):
#   data/imagenet/train/n01440764/...   data/imagenet/val/n01440764/...
# Recipe: SGD, 8 processes x 32 images = 256 per step, lr 0.1 (scale it linearly with the total batch), 100 epochs,
# cosine schedule, label smoothing 0.1. Run: accelerate launch -m attnkit train configs/classification/cls_r50-cbam_imagenet.py
_base_ = ['../_base_/default_runtime.py']
task = 'classification'
data_root = 'data/imagenet'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=50, out_indices=(3,), zero_init_residual=True,
                  attention=dict(type='cbam', stages=(True, True, True, True))),
    head=dict(type='linear'),
    label_smoothing=0.1,
    # mixup=dict(mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5),  # for longer (300-epoch) schedules
)
train_pipeline = [
    dict(type='RandomResizedCrop', size=(224, 224), scale=(0.08, 1.0)),
    dict(type='HorizontalFlip', p=0.5),
]
test_pipeline = [
    dict(type='SmallestMaxSize', max_size=256),
    dict(type='CenterCrop', height=224, width=224),
]
data = dict(
    train=dict(dataset=dict(type='ImageFolder', root=f'{data_root}/train', pipeline=train_pipeline),
               batch_size=32, num_workers=8, drop_last=True),
    val=dict(dataset=dict(type='ImageFolder', root=f'{data_root}/val', pipeline=test_pipeline),
             batch_size=64, num_workers=8),
    test=None,
)
evaluator = dict(type='Accuracy', topk=(1, 5))
runtime = dict(mixed_precision='bf16', log_interval=100)
optim = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
             no_decay=('norm', 'bias', 'gamma'))
schedule = dict(by_epoch=True, max_epochs=100, warmup_iters=2500, warmup_ratio=0.01, policy='cosine', min_lr_ratio=0.0)
train_cfg = dict(eval_interval=5, checkpoint_interval=1, keep_ckpts=2)
