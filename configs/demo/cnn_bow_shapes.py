# The plain VQA baseline on the shapes demo data: a small CNN (half-width ResNet-18, no attention modules),
# a bag-of-words question (word embeddings averaged: no word order) and multiplicative fusion of the two pooled
# vectors (heads/vqa/mul_fusion.py) -- no attention anywhere, not even question-guided attention over the grid.
# Same data, pipeline, schedule and budget as the from-scratch attention recipe
# (configs/demo/mcan_r18_gru_shapes_scratch.py), so the two can be compared on equal terms:
#   python -m attnkit train configs/demo/cnn_bow_shapes.py
_base_ = ['./mcan_r18_gru_shapes_scratch.py']
model = dict(
    _delete_=True,
    type='VQAModel',
    # layer4 (stride 32): the pooled vector of the deepest features; position is lost by the pooling, by design
    backbone=dict(type='ResNet', depth=18, base_channels=32, out_indices=(3,)),
    question_encoder=dict(type='bow', embed_dim=128),
    head=dict(type='mul_fusion', dim=256, hidden=256, dropout=0.1),
    loss_reduction='num_answers',
    topk=5)
