# MCAN-small (Yu et al. 2019) on a ResNet-50 C5 grid (14x14 at 448 px), word tokens + BiGRU by default.
model = dict(
    type='VQAModel',
    backbone=dict(type='ResNet', depth=50, out_indices=(3,), pretrained='torchvision://resnet50',
                  frozen_stages=1, norm_eval=True),
    question_encoder=dict(type='gru', embed_dim=300, hidden_dim=512),
    head=dict(type='mcan', dim=512, heads=8, ffn=2048, depth=6, flat_hidden=512, glimpses=1, out_dim=1024,
              dropout=0.1, pos_embed=True),
    loss_reduction='num_answers',  # BCE mean x num_answers (sum over answers, mean over questions)
    topk=5)
