"""VQA fusion heads on random grids, the VQAModel end to end on demo data, and the inferencer."""
import os

import pytest
import torch

from attnkit.builder import build_dataset, build_model
from attnkit.data.demo import generate_demo_data
from attnkit.evaluation.vqa import VQAAccuracy
from attnkit.registry import HEADS, INFERENCERS, build



TINY_MCAN = dict(type='mcan', dim=32, heads=4, ffn=64, depth=1, flat_hidden=32, out_dim=64, dropout=0.0)
TINY_SAN = dict(type='san', dim=32, att_dim=16, dropout=0.0)


@pytest.mark.parametrize('head_cfg', [TINY_MCAN, TINY_SAN])
def test_heads_on_random_grids(head_cfg):
    torch.manual_seed(0)
    head = build(HEADS, head_cfg, num_answers=7, img_channels=24, q_channels=20).eval()
    img = torch.randn(2, 24, 3, 5).to(memory_format=torch.channels_last)
    q = torch.randn(2, 6, 20)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6]).bool()
    out = head(img, q, mask)
    assert out['logits'].shape == (2, 7)
    att = out['attention']
    assert att.shape == (2, 3, 5) and torch.allclose(att.sum((1, 2)), torch.ones(2), atol=1e-5)
    # padded question tokens do not change anything
    q2 = q.clone()
    q2[0, 3:] = 100.0
    assert torch.allclose(head(img, q2, mask)['logits'], out['logits'], atol=1e-5)
    # the image matters, and gradients reach both inputs
    assert not torch.allclose(head(torch.randn_like(img), q, mask)['logits'], out['logits'], atol=1e-4)
    img.requires_grad_(True)
    q.requires_grad_(True)
    head(img, q, mask)['logits'].sum().backward()
    assert img.grad.abs().sum() > 0 and q.grad[1].abs().sum() > 0
    # question-only variant
    qonly = build(HEADS, head_cfg, num_answers=7, img_channels=None, q_channels=20)
    out = qonly(None, q, mask)
    assert out['logits'].shape == (2, 7) and out['attention'] is None


@pytest.mark.parametrize('head_cfg', [dict(TINY_MCAN, depth=2), TINY_SAN])
def test_heads_share_per_image_work_through_image_index(head_cfg):
    """image_index (questions -> distinct images) gives the same answers as one grid copy per question."""
    torch.manual_seed(0)
    head = build(HEADS, head_cfg, num_answers=7, img_channels=24, q_channels=20).eval()
    grids = torch.randn(2, 24, 4, 4)
    index = torch.tensor([1, 0, 1, 1, 0])
    q, mask = torch.randn(5, 6, 20), torch.ones(5, 6, dtype=torch.bool)
    shared = head(grids, q, mask, image_index=index)
    copied = head(grids[index], q, mask)
    assert torch.allclose(shared['logits'], copied['logits'], atol=1e-5)
    assert torch.allclose(shared['attention'], copied['attention'], atol=1e-6)
    assert shared['logits'].shape == (5, 7) and shared['attention'].shape == (5, 4, 4)


def test_mcan_position_embedding_makes_grid_order_matter():
    """Without positions the MCAN head is blind to where a cell is (permuting the grid changes nothing);
    with ``pos_embed`` the same permutation changes the answer logits (left/right becomes learnable)."""
    torch.manual_seed(0)
    img = torch.randn(2, 24, 4, 4)
    perm = torch.randperm(16)
    permuted = img.flatten(2)[:, :, perm].view_as(img)
    q, mask = torch.randn(2, 5, 20), torch.ones(2, 5, dtype=torch.bool)
    for pos_embed, order_matters in ((False, False), (True, True)):
        torch.manual_seed(1)
        head = build(HEADS, dict(TINY_MCAN, pos_embed=pos_embed), num_answers=7, img_channels=24,
                     q_channels=20).eval()
        a, b = head(img, q, mask)['logits'], head(permuted, q, mask)['logits']
        assert torch.allclose(a, b, atol=1e-5) != order_matters, pos_embed


@pytest.fixture(scope='module')
def demo_vqa(tmp_path_factory):
    paths = generate_demo_data(tmp_path_factory.mktemp('demo'), num_train=16, num_val=6, size=64, seed=0)
    common = dict(type='VQAv2Dataset', img_dir=paths['img_dir'], img_name_template='{image_id:06d}.jpg',
                  pipeline=[dict(type='Resize', height=64, width=64)])
    train = build_dataset(dict(common, questions_file=paths['vqa_train_questions'],
                               annotations_file=paths['vqa_train_annotations'], answer_min_count=1))
    val = build_dataset(dict(common, questions_file=paths['vqa_val_questions'],
                             annotations_file=paths['vqa_val_annotations']), metainfo=train.metainfo)
    return paths, train, val


BACKBONE = dict(type='ResNet', depth=18, base_channels=8, out_indices=(2,))


@pytest.mark.parametrize('encoder,head', [(dict(type='gru', embed_dim=16, hidden_dim=32, dropout=0.0), TINY_MCAN),
                                          (dict(type='transformer', dim=32, depth=1, heads=4, dropout=0.0),
                                           TINY_SAN)])
def test_train_steps_and_evaluate_on_demo_data(demo_vqa, encoder, head):
    _, train, val = demo_vqa
    torch.manual_seed(0)
    model = build_model(dict(type='VQAModel', backbone=BACKBONE, question_encoder=encoder, head=head),
                        metainfo=train.metainfo)
    batch = train.collate([train[i] for i in range(8)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(6):
        loss = model(batch)['loss']
        assert loss.shape == () and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    # loss scale: BCE mean x number of answers
    with torch.no_grad():
        logits = model.forward_logits(batch)['logits']
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch['answer_scores'])
        assert model(batch)['loss'].item() == pytest.approx(bce.item() * len(train.metainfo['answers']), rel=1e-4)
    model.eval()
    vbatch = val.collate([val[i] for i in range(5)])
    with torch.no_grad():
        preds = model(vbatch)
    assert len(preds) == 5 and preds[0]['question_id'] == vbatch['question_ids'][0]
    assert preds[0]['answer'] == train.metainfo['answers'][int(preds[0]['answer_ids'][0])]
    assert preds[0]['scores'].shape == (5,) and bool((preds[0]['scores'][:-1] >= preds[0]['scores'][1:]).all())
    assert preds[0]['attention'].shape == (4, 4)  # 64 px at stride 16
    ev = VQAAccuracy(dataset=val)
    ev.process(vbatch, preds)
    metrics = ev.compute()
    assert 0.0 <= metrics['accuracy'] <= 1.0 and metrics['num_questions'] == 5


def test_question_only_model_and_lr_mult_names(demo_vqa):
    _, train, _ = demo_vqa
    model = build_model(dict(type='VQAModel', use_image=False, question_encoder=dict(type='gru', embed_dim=8,
                                                                                     hidden_dim=16),
                             head=TINY_MCAN), metainfo=train.metainfo)
    assert model.backbone is None
    batch = train.collate([train[i] for i in range(4)])
    batch['images'] = None  # never looked at
    model.train()
    assert torch.isfinite(model(batch)['loss'])
    names = [n for n, _ in build_model(dict(type='VQAModel', backbone=BACKBONE, question_encoder=dict(type='gru'),
                                            head=TINY_SAN), metainfo=train.metainfo).named_parameters()]
    assert any(n.startswith('backbone.') for n in names) and any(n.startswith('question_encoder.') for n in names)


def test_infer_prints_top5_and_writes_heatmap(demo_vqa, tmp_path, capsys):
    paths, train, _ = demo_vqa
    torch.manual_seed(0)
    model = build_model(dict(type='VQAModel', backbone=BACKBONE, question_encoder=dict(type='gru', embed_dim=8,
                                                                                       hidden_dim=16),
                             head=TINY_MCAN), metainfo=train.metainfo).eval()
    cfg = {'data': {'val': {'dataset': {'pipeline': [dict(type='Resize', height=64, width=64)]}}}}
    image = os.path.join(paths['img_dir'], '000017.jpg')
    infer = INFERENCERS.get('VQAModel')
    files = infer(model, cfg, [image], str(tmp_path / 'out'), question='what color is the triangle?')
    assert files == [str(tmp_path / 'out' / '000017_vqa.png')] and os.path.getsize(files[0]) > 0
    printed = capsys.readouterr().out
    assert 'what color is the triangle?' in printed and '  5. ' in printed
    with pytest.raises(Exception, match='needs a question'):
        infer(model, cfg, [image], str(tmp_path / 'out'), question=None)


def test_fpn_level_as_grid_with_attention_backbone(demo_vqa):
    _, train, val = demo_vqa
    torch.manual_seed(0)
    model = build_model(dict(type='VQAModel',
                             backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3),
                                           attention=dict(type='se')),
                             neck=dict(type='FPN', out_channels=16, num_outs=3), neck_level=0,
                             question_encoder=dict(type='gru', embed_dim=8, hidden_dim=16), head=TINY_MCAN),
                        metainfo=train.metainfo).eval()
    with torch.no_grad():
        preds = model(val.collate([val[0], val[1]]))
    assert preds[0]['attention'].shape == (8, 8)  # FPN level 0 = stride 8 at 64 px


def test_count_pool_grows_with_the_number_of_selected_tokens_where_softmax_pooling_cannot():
    from attnkit.heads.vqa.mcan import AttFlat, CountPool
    torch.manual_seed(0)
    token = torch.randn(1, 1, 16)
    one, two = token.expand(1, 1, 16), token.expand(1, 2, 16)  # one object / the same object twice
    pool = CountPool(16, glimpses=2, out_dim=8)
    bias = pool.merge.bias
    assert torch.allclose(pool(two) - bias, 2 * (pool(one) - bias), atol=1e-5)
    flat = AttFlat(16, 8, 1, 8, dropout=0.0)
    assert torch.allclose(flat(one, None)[0], flat(two, None)[0], atol=1e-5)  # softmax: 1 and 2 look the same
    head = build(HEADS, dict(TINY_MCAN, count_glimpses=3), num_answers=5, img_channels=24, q_channels=20).eval()
    assert head.count is not None
    out = head(torch.randn(2, 24, 3, 3), torch.randn(2, 4, 20), torch.ones(2, 4, dtype=torch.bool))
    assert out['logits'].shape == (2, 5)


def _tiny_vqa_model(**kwargs):
    meta = {'answers': ['yes', 'no', '2'], 'tokenizer': {'type': 'word', 'max_len': 8},
            'question_vocab': ['<pad>', '<unk>', 'how', 'many']}
    cfg = dict(type='VQAModel', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 2)),
               question_encoder=dict(type='gru', embed_dim=8, hidden_dim=16), head=dict(TINY_MCAN), **kwargs)
    return build_model(cfg, metainfo=meta)


def test_concat_grid_fusion_and_one_backbone_pass_per_image():
    torch.manual_seed(0)
    model = _tiny_vqa_model(grid_fusion='concat').eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)  # the batch contract: uint8 pixels
    grid = model.image_grid(model.normalizer(images))
    assert grid.shape == (2, 8 + 32, 4, 4)  # layer1 (8 ch) pooled to layer3's 4x4, then layer3 (32 ch)
    ids, mask = torch.tensor([[2, 3], [2, 3], [2, 0]]), torch.tensor([[1, 1], [1, 1], [1, 0]])
    shared = model.forward_logits({'images': images, 'image_index': torch.tensor([0, 1, 0]), 'input_ids': ids,
                                   'attention_mask': mask})['logits']
    repeated = model.forward_logits({'images': images[[0, 1, 0]], 'input_ids': ids,
                                     'attention_mask': mask})['logits']
    assert torch.allclose(shared, repeated, atol=1e-5)
    assert _tiny_vqa_model().image_grid(model.normalizer(images)).shape == (2, 32, 4, 4)  # 'last': layer3 only
    with pytest.raises(Exception, match="grid_fusion must be 'last' or 'concat'"):
        _tiny_vqa_model(grid_fusion='sum')


def test_speed_benchmark_batch_groups_questions_by_image_like_the_collate():
    from attnkit.benchmarks.vqa import _synthetic_batch
    model = _tiny_vqa_model().train()
    batch = _synthetic_batch(model.metainfo, batch=7, size=32, length=5, questions_per_image=3)
    assert batch['images'].shape[0] == 3  # ceil(7 / 3) distinct images
    assert batch['image_index'].tolist() == [0, 0, 0, 1, 1, 1, 2]
    loss = model(batch)['loss']
    loss.backward()
    assert torch.isfinite(loss)
    assert 'image_index' not in _synthetic_batch(model.metainfo, 4, 32, 5)  # one image per question


def test_speed_benchmark_uses_the_configs_transformers_tokenizer(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from attnkit.benchmarks.vqa import _synthetic_metainfo, _throughput
    words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'what', 'is', '?']
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(tmp_path)
    tokenizer = dict(type='hf', path=str(tmp_path))
    meta = _synthetic_metainfo({'data': {'train': {'dataset': {'tokenizer': tokenizer}}}})
    assert meta['tokenizer'] == dict(tokenizer, max_len=14) and 'question_vocab' not in meta
    assert _synthetic_metainfo({'data': {'train': {'dataset': {}}}})['tokenizer']['type'] == 'word'
    model = dict(type='VQAModel', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 2)),
                 question_encoder=dict(type='hf', path=str(tmp_path)), head=dict(TINY_MCAN))
    # token ids drawn within the 8-word vocabulary of the encoder (an id >= 8 would fail in its embedding)
    report = _throughput(model, meta, batch=4, size=32, iters=1, warmup=0, bf16=False, questions_per_image=2)
    assert report['batch'] == 4 and report['questions_per_s'] > 0
