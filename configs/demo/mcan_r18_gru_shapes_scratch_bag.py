# The from-scratch demo VQA recipe (configs/demo/mcan_r18_gru_shapes_scratch.py: no masks, no pretrained weights)
# plus the answer-bag auxiliary loss (attnkit/tasks/vqa/answer_bag.py, docs/vqa.md): a 1x1 conv on the 8x8 grid
# predicts per cell the 'other'-type answers (here the 4 shape names and 5 colours), log-sum-exp pooled (r=5) to
# one logit per answer per image, BCE against the answers of ALL the image's questions (weight 1). It uses only
# the training QA annotations -- no masks, no boxes -- and aims at the shape questions the plain recipe leaves at
# the question-only level. Its figure (accuracy per question kind, shape probe) is measured by the lead engineer;
# until it is, this config is an experiment, not a recommended recipe. Measure with:
#   OMP_NUM_THREADS=2 attnkit train configs/demo/mcan_r18_gru_shapes_scratch_bag.py
# or the short diagnostic loop (same loss): tools/vqa_diagnose.py --answer-bag 1
_base_ = ['./mcan_r18_gru_shapes_scratch.py']
model = dict(aux_loss=dict(type='answer_bag', weight=1.0, pool='lse', r=5.0, answer_types=('other',)))
