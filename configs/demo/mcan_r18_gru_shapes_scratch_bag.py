# The from-scratch demo VQA recipe WITH the answer-bag auxiliary loss (no masks, no boxes, no pretrained weights):
# compare configs/demo/mcan_r18_gru_shapes_scratch.py (the same without it: shape questions stay at chance).
# - answer-bag loss (attnkit/tasks/vqa/answer_bag.py, docs/vqa.md): a 1x1 conv on the grid predicts per cell the
#   'other'-type answers of the image's questions (the shape names and colours), mean-pooled over the cells to one
#   logit per answer, BCE against the answers of ALL the image's questions (weight 1); only the training QA pairs.
# - 128 px and the layer3 grid (8x8): the shapes are 8-29 px here (4-15 px at the plain recipe's 64 px)
# - at most 2 questions of one image per batch (data.train.max_per_group): ~32 images per 64 questions, so the
#   backbone sees 5x more images per step than the image-grouped batches (~6.5 images)
# Why these three (docs/bench/vqa.md, "The answer-bag loss"): in the diagnostic loop the combination is the first run
# in which the shape probe and the shape questions leave chance (step 400: shape questions 0.46 vs 0.27-0.32).
# Measured at one learning rate 2026-12-02 (seed 0, 1 thread, 18.8 CPU-minutes): 0.788 overall, colour 0.85, shape 0.81, count 0.74,
# "is there" 0.91 -- against 0.615 / 0.63 / 0.30 / 0.61 / 0.82 for the plain scratch recipe; seeds 0-2: 0.771 +- 0.035,
# shape 0.776 +- 0.089.
# - the backbone and the bag conv at 2x the learning rate (2e-3; the question encoder and the head stay at 1e-3):
#   measured 2026-12-02 (docs/bench/vqa.md, "Cheaper or stronger variants", run E5) against the same recipe at one
#   rate, paired by seed: 0.813 vs 0.788 (seed 0), 0.761 vs 0.731 (seed 1), 0.779 vs 0.794 (seed 2); over seeds 0-2
#   0.784 +- 0.027 vs 0.771 +- 0.035 (shape 0.793 +- 0.067 vs 0.776 +- 0.089): a small gain, within one std.
# - a one-layer MCAN head (head.depth=1; 18 % less CPU per epoch) for 10 epochs instead of two layers for 8: measured
#   2026-12-02 (docs/bench/vqa.md, "One view per epoch ...", run E9) over seeds 0-2: 0.815 +- 0.013 (0.830, 0.807,
#   0.807; shape 0.847 +- 0.049, counts 0.75, colour 0.90) in 19.2-19.9 CPU-minutes, against 0.784 +- 0.027 for the
#   two-layer head in 8 epochs (paired by seed: +1.7, +4.6, +2.8 points).
# - 14 epochs (evaluations at 7 and 14): measured 2026-12-02 on a 2-core AMD EPYC with AVX-512 (docs/bench/vqa.md,
#   run E11) over seeds 0-2: 0.851 +- 0.015 (0.857, 0.834, 0.862; shape 0.906 +- 0.026, colour 0.94, counts 0.80) in
#   13.7-14.4 CPU-minutes there. CPU time depends on the CPU: the AVX2-only EPYC of the earlier runs needs about
#   1.85x as long (10 epochs took it 19.2-19.9 CPU-minutes), so 14 epochs exceed 15 CPU-minutes there.
# Measure with:  OMP_NUM_THREADS=1 attnkit train configs/demo/mcan_r18_gru_shapes_scratch_bag.py \
#                    --cfg-options evaluator.question_kinds=question_type
_base_ = ['./mcan_r18_gru_shapes_scratch.py']
img_size = 128
pipeline = [dict(type='Resize', height=img_size, width=img_size)]
train_pipeline = [
    dict(type='Affine', scale=(0.92, 1.08), translate_percent=(-0.05, 0.05), border_mode=0, fill=0, p=0.8),
    dict(type='RandomBrightnessContrast', brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    dict(type='Resize', height=img_size, width=img_size)]
data = dict(train=dict(dataset=dict(pipeline=train_pipeline), max_per_group=2),
            val=dict(dataset=dict(pipeline=pipeline)))
model = dict(backbone=dict(out_indices=(2,)), head=dict(depth=1),
             aux_loss=dict(type='answer_bag', weight=1.0, pool='mean', answer_types=('other',)))
schedule = dict(max_epochs=14)
train_cfg = dict(eval_interval=7, checkpoint_interval=7)
optim = dict(lr_mult={'backbone': 2.0, 'answer_bag': 2.0})
