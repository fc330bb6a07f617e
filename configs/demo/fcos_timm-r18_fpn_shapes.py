# The demo detector (fcos_r18-cbam_fpn_shapes.py) on timm's ResNet-18 instead of attnkit's: the same half-width
# stages (32/64/128/256; timm's plain stem is always 64 wide: +6k parameters) and the same CBAM placement: every
# block of layer2-4, on the residual branch after the last norm (each BasicBlock's bn2, where attnkit's
# 'after_conv3' puts it), inserted with attnkit.attention.insert by timm's module names; trained from scratch.
# timm's feature levels 2..4 are layer2..layer4 (strides 8, 16, 32). zero_init_last=False: timm zeroes each block's
# last BN weight by default (attnkit's ResNet only with zero_init_residual=True); with it this demo reached AP 0.470
# instead of attnkit's 0.655, since CBAM then starts on an all-zero branch.
# attnkit train configs/demo/fcos_timm-r18_fpn_shapes.py
_base_ = ['./fcos_r18-cbam_fpn_shapes.py']
model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='resnet18', out_indices=(2, 3, 4),
                  channels=(32, 64, 128, 256), zero_init_last=False,
                  attention=dict(type='cbam', after=['layer2.*.bn2', 'layer3.*.bn2', 'layer4.*.bn2'])),
)
