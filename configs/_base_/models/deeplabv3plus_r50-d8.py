# DeepLabV3+ (Chen et al. 2018): separable ASPP neck on layer4 (output stride 8) + low-level (layer1) decoder.
model = dict(
    type='Segmentor',
    backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), output_stride=8,
                  pretrained='torchvision://resnet50', frozen_stages=-1, norm_eval=False),
    neck=dict(type='ASPP', in_index=3, out_channels=512, dilations=(1, 12, 24, 36), separable=True),
    decode_head=dict(type='deeplabv3plus', in_index=3, c1_index=0, c1_channels=48, channels=512, dropout=0.1),
    auxiliary_head=dict(type='fcn', in_index=2, channels=256, num_convs=1, concat_input=False, dropout=0.1,
                        loss_weight=0.4, loss_name='loss_aux'),
    test_mode='whole',
)
