# The demo detector (configs/demo/fcos_r18-cbam_fpn_shapes.py: FCOS on a half-width ResNet-18 + CBAM in layers 2-4,
# 3-level FPN) fine-tuned from the demo classifier instead of trained from scratch. Pre-train first:
#     attnkit train configs/demo/cls_r18-cbam_shapes.py          # writes work_dirs/cls_r18-cbam_shapes/best.pth
#     attnkit train configs/demo/fcos_r18-cbam_fpn_shapes_from-cls.py
# The backbone takes only the classifier's `backbone.*` tensors (the classification head is dropped and reported);
# the CBAM modules keep their trained weights and gamma. The classifier's backbone must be the same network:
# depth 18, base_channels 32, CBAM in layers 2-4 (anything else stops with a CheckpointError naming the first
# tensor whose shape differs). tools/pretrain_finetune_demo.py runs classifier -> this config and the
# from-scratch config for several seeds and prints detection AP mean +- std of both.
_base_ = ['./fcos_r18-cbam_fpn_shapes.py']
classifier_checkpoint = 'work_dirs/cls_r18-cbam_shapes/best.pth'
model = dict(backbone=dict(pretrained=classifier_checkpoint))
