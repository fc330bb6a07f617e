# The question-only baseline for the demo: same question encoder, MCAN question side and schedule as
# configs/demo/mcan_r18_gru_shapes.py, no image at all (so no backbone and no stage 1).
# What it scores is what the answers' priors given the question allow (the demo data is balanced against it).
_base_ = ['./mcan_r18_gru_shapes.py']
model = dict(use_image=False, backbone=None)
