# The question-only baseline for the demo: same question encoder and MCAN question side, no image at all.
# What it scores is what the answers' priors given the question allow (the demo data is balanced against it).
_base_ = ['./mcan_r18_gru_shapes.py']
model = dict(use_image=False, backbone=None)
schedule = dict(max_epochs=14)
