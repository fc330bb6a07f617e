"""VQA v2 reading: vocabularies, soft scores, tokenisation (built-in and transformers), bad input."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.builder import build_dataset
from attnkit.errors import ConfigError, DataError
from attnkit.tasks.vqa.answers import build_answer_vocab, normalize_answer, soft_scores
from attnkit.tasks.vqa.text import WordTokenizer, build_question_vocab, tokenize_words


def _ann(qid, answers, mc=None, atype='other'):
    rec = {'question_id': qid, 'answer_type': atype, 'answers': [{'answer': a, 'answer_id': i + 1}
                                                                   for i, a in enumerate(answers)]}
    if mc is not None:
        rec['multiple_choice_answer'] = mc
    return rec


def _write_split(root, questions, annotations=None, subtype='train2014', images=(1, 2)):
    root.mkdir(parents=True, exist_ok=True)
    img_dir = root / 'images'
    img_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id in images:
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            img_dir / f'COCO_{subtype}_{image_id:012d}.jpg')
    qf = root / f'q_{subtype}.json'
    qf.write_text(json.dumps({'data_subtype': subtype, 'questions': questions}))
    af = None
    if annotations is not None:
        af = root / f'a_{subtype}.json'
        af.write_text(json.dumps({'data_subtype': subtype, 'annotations': annotations}))
    return str(qf), None if af is None else str(af), str(img_dir)


QUESTIONS = [{'image_id': 1, 'question': 'What color is the cat?', 'question_id': 10},
             {'image_id': 1, 'question': 'How many cats?', 'question_id': 11},
             {'image_id': 2, 'question': 'Is the cat black?', 'question_id': 12}]
ANNOTATIONS = [_ann(10, ['Black'] * 6 + ['black.'] * 2 + ['white'] * 2, 'black'),
               _ann(11, ['two'] * 3 + ['2'] * 5 + ['3'] * 2, '2', 'number'),
               _ann(12, ['yes'] * 9 + ['no'], 'yes', 'yes/no')]


def _dataset(qf, af, img_dir, **kw):
    cfg = dict(type='VQAv2Dataset', questions_file=qf, annotations_file=af, img_dir=img_dir,
               pipeline=[dict(type='Resize', height=32, width=32)], answer_min_count=1)
    cfg.update(kw)
    metainfo = cfg.pop('metainfo', None)
    return build_dataset(cfg, metainfo=metainfo)


def test_answer_normalisation_vocab_and_soft_scores():
    assert normalize_answer(' Two.\n') == '2'
    assert normalize_answer('A Dog') == 'dog'
    assert normalize_answer('black/white') == 'black white'
    anns = [_ann(1, ['x'] * 10, 'Two'), _ann(2, ['x'] * 10, '2'), _ann(3, ['x'] * 10, 'dog'),
            _ann(4, ['a dog'] * 6 + ['cat'] * 4)]  # no multiple_choice_answer: majority of the ten
    assert build_answer_vocab(anns, min_count=2) == ['2', 'dog']
    assert build_answer_vocab(anns, min_count=1) == ['2', 'dog']
    assert build_answer_vocab(anns, min_count=3) == []
    index = {'2': 0, 'dog': 1, 'cat': 2}
    scores, outside = soft_scores(['two', '2', 'Dog', 'dog', 'the dog', 'a dog', 'cat', 'cow', 'cow', 'owl'], index)
    assert scores == {0: pytest.approx(0.6), 1: 1.0, 2: pytest.approx(0.3)}
    assert outside == 3
    scores, _ = soft_scores(['cat'] * 3, index)
    assert scores == {2: pytest.approx(0.9)}


def test_word_tokenizer():
    vocab = build_question_vocab(['What is it?', "what's that", 'what'])
    assert vocab[:3] == ['<pad>', '<unk>', 'what']
    assert tokenize_words("What's LEFT of 2 cats?") == ["what's", 'left', 'of', '2', 'cats']
    tok = WordTokenizer(vocab, max_len=2)
    out = tok(['what is it', 'zebra', '???'])
    assert out['input_ids'].tolist() == [[2, vocab.index('is')], [1, 0], [1, 0]]  # cut, unknown, empty -> <unk>
    assert out['attention_mask'].tolist() == [[1, 1], [1, 0], [1, 0]]


def test_dataset_samples_targets_metainfo_and_test_split(tmp_path):
    qf, af, img_dir = _write_split(tmp_path / 'train', QUESTIONS, ANNOTATIONS)
    ds = _dataset(qf, af, img_dir)
    meta = ds.metainfo
    assert sorted(meta['answers']) == ['2', 'black', 'yes']
    assert meta['tokenizer']['type'] == 'word' and meta['question_vocab'][:2] == ['<pad>', '<unk>']
    torch.save({'meta': meta}, tmp_path / 'm.pt')  # plain containers: loads with weights_only=True
    assert torch.load(tmp_path / 'm.pt', weights_only=True)['meta'] == meta
    s = ds[0]
    assert s['image'].shape == (3, 32, 32) and s['question_id'] == 10
    assert s['meta']['ori_size'] == (40, 48) and s['meta']['scale_factor'] == (32 / 48, 32 / 40)
    black = meta['answers'].index('black')
    assert s['answer_scores'][black] == 1.0 and s['answer_scores'].sum() == 1.0  # 'white' is not in the vocab
    s1 = ds[1]
    assert s1['answer_scores'][meta['answers'].index('2')] == 1.0  # two/2 merged: 8 annotators
    batch = ds.collate([ds[2], ds[0], ds[1]])  # questions 12 (image 2), 10 and 11 (both image 1)
    assert batch['images'].shape == (2, 3, 32, 32)  # one image per distinct image id
    assert batch['image_index'].tolist() == [0, 1, 1]
    assert torch.equal(batch['images'][1], ds[0]['image']) and torch.equal(batch['images'][0], ds[2]['image'])
    batch = ds.collate([ds[0], ds[1], ds[2]])
    assert batch['input_ids'].shape == batch['attention_mask'].shape == (3, 5)
    assert batch['attention_mask'].sum(1).tolist() == [5, 3, 4]
    assert batch['question_ids'] == [10, 11, 12] and batch['answer_scores'].shape == (3, 3)
    assert ds.get_ground_truth(11) == (['two'] * 3 + ['2'] * 5 + ['3'] * 2, 'number')

    # a test split: no annotations, vocabularies from the training metainfo
    tq, _, timg = _write_split(tmp_path / 'test', [{'image_id': 5, 'question': 'Is it a dog?', 'question_id': 99}],
                               subtype='test2015', images=(5,))
    test = _dataset(tq, None, timg, metainfo=meta)
    sample = test[0]
    assert 'answer_scores' not in sample and test.get_ground_truth(99) is None
    b = test.collate([sample])
    assert b['input_ids'][0, 3] == 1  # 'dog' is not in the training questions: <unk>
    with pytest.raises(ConfigError, match='metainfo'):
        _dataset(tq, None, timg)


def test_transformers_tokenizer_and_encoder(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from attnkit.tasks.vqa.text import build_question_encoder

    words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'what', 'color', 'is', 'the', 'cat', 'how', 'many',
             'cats', '?', 'black']
    vocab = {w: i for i, w in enumerate(words)}
    tok_dir = tmp_path / 'tiny-bert'
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(tok_dir)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(tok_dir)
    qf, af, img_dir = _write_split(tmp_path / 'train', QUESTIONS, ANNOTATIONS)
    ds = _dataset(qf, af, img_dir, tokenizer=dict(type='hf', path=str(tok_dir)), max_question_len=6)
    assert ds.metainfo['tokenizer'] == {'type': 'hf', 'path': str(tok_dir), 'max_len': 6}
    assert 'question_vocab' not in ds.metainfo
    batch = ds.collate([ds[0], ds[1]])
    ids = batch['input_ids']
    assert ids[0].tolist() == [2, 5, 6, 7, 8, 3]  # [CLS] what color is the [SEP]: cut at 6
    assert ids[1].tolist() == [2, 10, 11, 12, 13, 3]
    enc = build_question_encoder(dict(type='hf', freeze=True), ds.metainfo)
    out = enc(ids, batch['attention_mask'])
    assert out.shape == (2, 6, 16) and enc.out_channels == 16
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.model.training  # frozen encoders stay in eval mode (no dropout)
    with pytest.raises(ConfigError, match="'word'"):
        build_question_encoder(dict(type='gru'), ds.metainfo)

    # a VQAModel with the transformers encoder fine-tuned: a few training steps
    from attnkit.builder import build_model
    model = build_model(dict(type='VQAModel', backbone=dict(type='ResNet', depth=18, base_channels=8,
                                                             out_indices=(2,)),
                             question_encoder=dict(type='hf', path=str(tok_dir)),
                             head=dict(type='san', dim=16, att_dim=8, dropout=0.0)), metainfo=ds.metainfo)
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith('question_encoder.model.') for n in names)  # the optim.lr_mult prefix
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(4):
        loss = model(batch)['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    grads = [p.grad for n, p in model.named_parameters() if n.startswith('question_encoder.model.')]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    with pytest.raises(ConfigError, match='does not exist'):
        _dataset(qf, af, img_dir, tokenizer=dict(type='hf', path=str(tmp_path / 'nope'))).collate([ds[0]])


def test_bad_input(tmp_path):
    # a question without annotation in an annotated split
    qf, af, img_dir = _write_split(tmp_path / 'a', QUESTIONS, ANNOTATIONS[:2])
    with pytest.raises(DataError, match=r'no annotation for 1 question.*question_id 12'):
        _dataset(qf, af, img_dir)
    # questions passed as annotations, and the other way round
    qf, af, img_dir = _write_split(tmp_path / 'b', QUESTIONS, ANNOTATIONS)
    with pytest.raises(DataError, match="a questions file"):
        _dataset(qf, qf, img_dir)
    with pytest.raises(DataError, match="an annotations file"):
        _dataset(af, af, img_dir)
    # a missing image: found when the dataset is built, named with the questions file that lists it
    qf, af, img_dir = _write_split(tmp_path / 'c', QUESTIONS, ANNOTATIONS, images=(1,))
    with pytest.raises(DataError, match=r'q_train2014\.json.*1 listed image.*COCO_train2014_000000000002\.jpg'):
        _dataset(qf, af, img_dir)
    # an empty question is skipped with a counted warning; an answer outside the vocabulary: zero target
    questions = QUESTIONS + [{'image_id': 2, 'question': '  ', 'question_id': 13}]
    qf, af, img_dir = _write_split(tmp_path / 'd', questions, ANNOTATIONS)
    with pytest.warns(UserWarning, match='skipped 1 empty question'):
        ds = _dataset(qf, af, img_dir)
    assert len(ds) == 3 and ds.stats['empty_questions'] == 1
    val_anns = [_ann(10, ['purple'] * 10), ANNOTATIONS[1], ANNOTATIONS[2]]
    qf2, af2, img_dir2 = _write_split(tmp_path / 'e', QUESTIONS, val_anns, subtype='val2014')
    with pytest.warns(UserWarning, match=r'13 of 30 answers are outside the 3-answer vocabulary'):
        val = _dataset(qf2, af2, img_dir2, metainfo=ds.metainfo)
    assert val.stats['questions_without_target'] == 1
    assert val.records[0]['scores'] == {}
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert val[0]['answer_scores'].sum() == 0  # no crash, zero target
    # a malformed annotation record names the file and the record
    (tmp_path / 'bad.json').write_text(json.dumps({'annotations': [{'question_id': 10, 'answers': 'yes'}]}))
    with pytest.raises(DataError, match=r"bad\.json.*record 0"):
        _dataset(qf, str(tmp_path / 'bad.json'), img_dir)


def test_batch_fetch_reads_each_image_once(tmp_path, monkeypatch):
    """The DataLoader's batch fetch (``__getitems__``) reads an image once for all its questions in the batch."""
    import attnkit.tasks.vqa.dataset as vqa_dataset

    qf, af, img_dir = _write_split(tmp_path / 'train', QUESTIONS, ANNOTATIONS)
    ds = _dataset(qf, af, img_dir)
    reads = []
    real_read = vqa_dataset.read_image
    monkeypatch.setattr(vqa_dataset, 'read_image', lambda path, **kw: reads.append(path) or real_read(path, **kw))
    samples = ds.__getitems__([0, 1, 2])  # questions 10 and 11 ask about image 1, 12 about image 2
    assert len(reads) == 2
    one_by_one = [ds[i] for i in range(3)]
    for a, b in zip(samples, one_by_one):
        assert torch.equal(a['image'], b['image']) and a['meta'] == b['meta'] and a['question'] == b['question']
        assert torch.equal(a['answer_scores'], b['answer_scores'])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=ds.collate)
    reads.clear()
    batch = next(iter(loader))
    assert len(reads) == 2 and batch['images'].shape[0] == 2 and batch['image_index'].tolist() == [0, 0, 1]


def test_swap_words_keeps_case_and_whole_words():
    from attnkit.tasks.vqa.dataset import swap_words
    lr = {'left': 'right', 'right': 'left'}
    assert swap_words('Is the cat left of the dog, right?', lr) == 'Is the cat right of the dog, left?'
    assert swap_words('Left or right', lr) == 'Right or left'
    assert swap_words('leftover rights stay', lr) == 'leftover rights stay'
    assert swap_words('anything', {}) == 'anything'


def test_question_aware_flip_mirrors_image_question_and_answer(tmp_path):
    questions = [{'image_id': 1, 'question': 'Which side is the cat on?', 'question_id': 20},
                 {'image_id': 1, 'question': 'Is the cat left of the dog?', 'question_id': 21},
                 {'image_id': 2, 'question': 'Which side is the dog on?', 'question_id': 22},
                 {'image_id': 2, 'question': 'Where is the bird?', 'question_id': 23}]
    annotations = [_ann(20, ['left'] * 8 + ['left side'] * 2), _ann(21, ['yes'] * 10, atype='yes/no'),
                   _ann(22, ['right'] * 10), _ann(23, ['left side'] * 10)]
    qf, af, img_dir = _write_split(tmp_path / 'train', questions, annotations)
    plain = _dataset(qf, af, img_dir)
    with pytest.warns(UserWarning, match='swapped by the question-aware flip'):
        flipped = _dataset(qf, af, img_dir, flip_prob=1.0)
    # "left side" is an answer of the split, "right side" is not: 2 + 10 flipped answers get no target
    assert flipped.stats['flipped_answers_outside_vocab'] == 12
    index = flipped.answer_to_index
    for i in range(4):
        a, b = plain[i], flipped[i]
        assert torch.equal(b['image'], a['image'].flip(-1)) and b['meta']['flipped'] and not a['meta']['flipped']
    side, rel = flipped[0], flipped[1]
    assert rel['question'] == 'Is the cat right of the dog?'
    assert rel['answer_scores'][index['yes']] == 1.0  # yes/no answers keep their truth
    assert side['question'] == 'Which side is the cat on?'
    assert side['answer_scores'][index['right']] == 1.0 and side['answer_scores'][index['left']] == 0.0
    assert side['answer_scores'][index['left side']] == 0.0 and side['answer_scores'].sum() == 1.0
    assert flipped[3]['answer_scores'].sum() == 0.0 and plain[3]['answer_scores'][index['left side']] == 1.0
    batch = flipped.collate(flipped.__getitems__([0, 1, 2]))
    assert batch['questions'][1] == 'Is the cat right of the dog?'
    # samples loaded one by one may flip the same image differently: each question keeps its own view
    mixed = flipped.collate([plain[0], flipped[1], flipped[0]])
    assert mixed['images'].shape[0] == 2 and mixed['image_index'].tolist() == [0, 1, 1]
    assert torch.equal(mixed['images'][1], flipped[1]['image']) and mixed['questions'][1] == rel['question']
    with pytest.raises(ConfigError, match='flip_prob'):
        _dataset(qf, af, img_dir, flip_prob=1.5)
