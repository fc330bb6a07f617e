# DANet (Fu et al. 2019): position + channel attention head (gamma = 0 at init) on a dilated ResNet-50.
model = dict(
    type='Segmentor',
    backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), output_stride=8,
                  pretrained='torchvision://resnet50', frozen_stages=-1, norm_eval=False),
    decode_head=dict(type='danet', in_index=3, channels=512, pam=dict(type='danet_pam', reduction=8),
                     cam=dict(type='danet_cam'), identity_init=True, aux_weight=1.0, dropout=0.1),
    auxiliary_head=dict(type='fcn', in_index=2, channels=256, num_convs=1, concat_input=False, dropout=0.1,
                        loss_weight=0.4, loss_name='loss_aux'),
    test_mode='whole',
)
