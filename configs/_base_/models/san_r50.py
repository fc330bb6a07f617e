# Stacked attention networks (Yang et al. 2016), two hops, on a ResNet-50 C5 grid.
model = dict(
    type='VQAModel',
    backbone=dict(type='ResNet', depth=50, out_indices=(3,), pretrained='torchvision://resnet50',
                  frozen_stages=1, norm_eval=True),
    question_encoder=dict(type='gru', embed_dim=300, hidden_dim=1024),
    head=dict(type='san', dim=1024, att_dim=512, hops=2, dropout=0.5),
    loss_reduction='num_answers',
    topk=5)
