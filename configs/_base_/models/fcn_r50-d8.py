# FCN (Long et al. 2015) on a dilated ResNet-50 (output stride 8), with an auxiliary FCN head on layer3.
model = dict(
    type='Segmentor',
    backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), output_stride=8,
                  pretrained='torchvision://resnet50', frozen_stages=-1, norm_eval=False),
    decode_head=dict(type='fcn', in_index=3, channels=512, num_convs=2, concat_input=True, dropout=0.1),
    auxiliary_head=dict(type='fcn', in_index=2, channels=256, num_convs=1, concat_input=False, dropout=0.1,
                        loss_weight=0.4, loss_name='loss_aux'),
    test_mode='whole',
)
