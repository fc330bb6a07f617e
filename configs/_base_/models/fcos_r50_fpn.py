# FCOS R50-FPN (Tian et al. 2019, with centre sampling, norm_on_bbox, centerness on the regression branch, GIoU):
# ImageNet-pretrained ResNet-50 (torchvision weights read from the local torch hub cache, never downloaded),
# stem and layer1 frozen, BatchNorm statistics frozen; FPN P3-P7 (P6/P7 from P5's output); GroupNorm towers.
# num_classes comes from the dataset's classes.
model = dict(
    type='Detector',
    backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True,
                  pretrained='torchvision://resnet50'),
    neck=dict(type='FPN', out_channels=256, num_outs=5, start_level=1, add_extra_convs='on_output',
              relu_before_extra_convs=True),
    head=dict(type='FCOSHead', feat_channels=256, stacked_convs=4, strides=(8, 16, 32, 64, 128),
              regress_ranges=((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)),
              center_sampling=True, center_sample_radius=1.5, norm_on_bbox=True, centerness_on_reg=True, norm='GN',
              focal_alpha=0.25, focal_gamma=2.0, score_thr=0.05, nms_pre=1000, iou_thr=0.6, max_per_img=100),
)
