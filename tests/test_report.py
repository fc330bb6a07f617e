"""``attnkit report`` and the Trainer's report.html: structure and embedded images of the page (no browser here;
``make test-browser`` renders it in chromium), per-image scores, missing parts, the runtime.report option."""
import base64
import html
import io
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import engine_toy
from attnkit import cli
from attnkit.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ['background', 'circle', 'square', 'triangle', 'star']


class Page(HTMLParser):
    """The parts of a report page the tests look at: images, ids, tables (id -> rows of cell texts), classes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.imgs, self.ids, self.classes, self.tables, self.links = [], set(), [], {}, []
        self.text = text
        self._table = self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or '' for k, v in attrs}
        if 'id' in a:
            self.ids.add(a['id'])
        self.classes += a.get('class', '').split()
        if tag == 'img':
            self.imgs.append(a)
        if tag in ('script', 'link', 'iframe') and (a.get('src') or a.get('href')):
            self.links.append(a.get('src') or a.get('href'))
        if tag == 'table':
            self._table = self.tables.setdefault(a.get('id', f'anonymous{len(self.tables)}'), [])
        elif tag == 'tr' and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ('td', 'th') and self._row is not None:
            self._cell = ''

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ('td', 'th') and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == 'table':
            self._table = self._row = None


def read_page(path) -> Page:
    with open(path, encoding='utf-8') as f:
        return Page(f.read())


def decode_png(src: str) -> Image.Image:
    prefix = 'data:image/png;base64,'
    assert src.startswith(prefix), src[:40]
    data = base64.b64decode(src[len(prefix):], validate=True)
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    img = Image.open(io.BytesIO(data))
    img.load()  # decodes every pixel: a truncated PNG fails here
    return img


def assert_self_contained(page: Page) -> None:
    assert page.links == [], f'external resources: {page.links}'
    for img in page.imgs:
        picture = decode_png(img['src'])
        assert picture.width > 0 and picture.height > 0


@pytest.fixture(scope='module')
def trained(demo_data, tmp_path_factory):
    """A tiny DANet trained 4 iterations (evaluations at 2 and 4) with runtime.report on; the report calls."""
    from attnkit.config import load_config
    from attnkit.engine import Trainer
    import attnkit.report as report
    tmp = tmp_path_factory.mktemp('report')
    voc = demo_data['voc_root']
    cfg = load_config(os.path.join(ROOT, 'configs/demo/danet_r18-d8_shapes.py'), {
        'data.train.dataset.root': voc, 'data.val.dataset.root': voc,
        'data.train.batch_size': 4, 'data.val.batch_size': 6,
        'model.backbone.base_channels': 8, 'model.decode_head.channels': 16,
        'schedule.max_iters': 4, 'schedule.warmup_iters': 0,
        'train_cfg.eval_interval': 2, 'train_cfg.checkpoint_interval': 2,
        'runtime.log_interval': 1, 'runtime.tensorboard': False,
        'runtime.report': dict(gallery_images=6, show=2)})
    cfg.data.train.dataset.pipeline = [dict(type='RandomCropCatMax', height=64, width=64)]
    calls = []
    real = report.write_report
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, 'write_report', lambda *a, **k: calls.append(k) or real(*a, **k))
        Trainer(cfg, work_dir=str(tmp / 'work')).train()
    return tmp / 'work', calls


def last_val_record(work) -> dict:
    with open(work / 'log.jsonl') as f:
        return [r for r in map(json.loads, f) if r['mode'] == 'val'][-1]


def test_trainer_writes_a_report_after_every_evaluation(trained):
    work, calls = trained
    assert len(calls) == 2  # evaluations at iterations 2 and 4
    assert [(c['gallery_images'], c['show'], c['attention_images']) for c in calls] == [(6, 2, 0)] * 2
    page = read_page(work / 'report.html')
    assert_self_contained(page)
    assert {'curve-losses', 'curve-lr', 'curve-metrics', 'final-metrics', 'per-class-table', 'config-text',
            'gallery-best', 'gallery-worst'} <= page.ids
    assert 'missing' not in page.ids  # everything a training run has is shown
    curves = {img['id']: decode_png(img['src']) for img in page.imgs if 'curve' in img.get('class', '')}
    assert set(curves) == {'curve-losses', 'curve-lr', 'curve-metrics'}
    assert all(im.width >= 300 and len(np.unique(np.asarray(im.convert('L')))) > 20 for im in curves.values())
    # the final metric table holds the log's last evaluation, per-class values in their own table
    record = last_val_record(work)
    rows = page.tables['final-metrics'][1:]
    assert rows == [[k, f'{record[k]:.4f}'] for k in ('mIoU', 'mAcc', 'aAcc')]
    per_class = page.tables['per-class-table']
    assert per_class[0] == ['class', 'IoU']
    expected = {c: record[f'IoU.{c}'] for c in CLASSES}
    assert [r[0] for r in per_class[1:]] == CLASSES
    for name, value in per_class[1:]:
        assert value == ('nan' if expected[name] == 'nan' else f'{expected[name]:.4f}')  # the log writes NaN as text
    saved = json.loads((work / 'report' / 'per_class.json').read_text())
    assert [r[0] for r in saved['rows']] == CLASSES
    config = html.unescape(page.text[page.text.index('id="config-text"'):])
    assert "type='danet'" in config and "type='RandomCropCatMax'" in config  # the config, escaped in the page


def _scores(page: Page, kind: str) -> list[float]:
    import re
    figures = re.findall(rf'<figure class="prediction {kind}">.*?<figcaption>(.*?)</figcaption>', page.text)
    return [float(re.search(r'image mIoU = ([0-9.]+)', f).group(1)) for f in figures]


def test_gallery_shows_best_and_worst_by_image_miou(trained, demo_data):
    work, _ = trained
    page = read_page(work / 'report.html')
    best, worst = _scores(page, 'best'), _scores(page, 'worst')
    assert len(best) == 2 and len(worst) == 2
    assert best == sorted(best, reverse=True) and worst == sorted(worst) and min(best) >= max(worst)
    # recomputed here: the model's prediction of every val image against its mask, mIoU over present classes
    from attnkit.builder import build_dataset
    from attnkit.config import load_config
    from attnkit.engine import load_model
    from attnkit.evaluation.miou import confusion_matrix
    cfg = load_config(str(work / 'config.py'))
    model = load_model(cfg, str(work / 'model.safetensors'))
    dataset = build_dataset(cfg.data.val.dataset, metainfo=model.metainfo)
    reference = []
    for i in range(len(dataset)):
        sample = dataset[i]
        with torch.no_grad():
            pred = model(dataset.collate([sample]))[0]['sem_seg'].numpy()
        cm = confusion_matrix(pred, sample['mask'].numpy(), 5, 255)
        cm = np.asarray(cm, np.float64)
        union = cm.sum(0) + cm.sum(1) - np.diag(cm)
        reference.append(float(np.mean(np.diag(cm)[union > 0] / union[union > 0])))
    assert best == pytest.approx(sorted(reference, reverse=True)[:2], abs=0.006)
    assert worst == pytest.approx(sorted(reference)[:2], abs=0.006)


def test_cli_report_with_attention_gallery(trained, tmp_path, capsys):
    work, _ = trained
    out = tmp_path / 'r.html'
    assert cli.main(['report', str(work), '--out', str(out), '--images', '3', '--show', '1', '--attention', '1']) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = read_page(out)
    assert_self_contained(page)
    assert 'missing' not in page.ids, page.text[page.text.find('id="missing"'):][:400]
    assert page.classes.count('prediction') == 2 and page.classes.count('attention') >= 2  # explain's views
    assert 'weights: model.safetensors' in page.text


def test_missing_parts_are_named_and_the_rest_renders(trained, tmp_path, capsys):
    work, _ = trained
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert cli.main(['report', str(empty)]) == 0
    page = read_page(empty / 'report.html')
    missing = page.text[page.text.index('id="missing"'):page.text.index('id="metrics"')]
    assert 'No training log' in missing and 'No config' in missing and 'No checkpoint' in missing
    assert page.imgs == [] and {'metrics', 'curves', 'predictions', 'config'} <= page.ids
    # a log alone (its last line cut short by a killed run): curves and metrics, the rest named as missing
    logs = tmp_path / 'logs'
    logs.mkdir()
    text = (work / 'log.jsonl').read_text()
    (logs / 'log.jsonl').write_text(text + '{"mode": "train", "iter": 9, "lo')
    (logs / 'interpretability.json').write_text(json.dumps({  # as attnkit explain --eval writes it
        'schema_version': 1, 'task': 'segmentation', 'num_images': 6,
        'rows': [{'module': 'decode_head.pam', 'method': 'self_attention', 'energy': 0.41, 'area_fraction': 0.25},
                 {'module': None, 'method': 'gradcam', 'energy': 0.3, 'area_fraction': 0.25}],
        'best_attention': {'module': 'decode_head.pam', 'energy': 0.41}}))
    assert cli.main(['report', str(logs), '--out', str(logs / 'x.html')]) == 0
    page = read_page(logs / 'x.html')
    assert_self_contained(page)
    assert {'curve-losses', 'curve-lr', 'curve-metrics', 'final-metrics', 'per-class-table'} <= page.ids
    assert 'gallery-best' not in page.ids
    assert page.tables['interpretability-table'] == [
        ['module', 'method', 'energy', 'area_fraction'], ['decode_head.pam', 'self_attention', '0.4100', '0.2500'],
        ['', 'gradcam', '0.3000', '0.2500']]
    assert 'agrees most with the objects: module decode_head.pam, energy 0.41' in page.text
    missing = page.text[page.text.index('id="missing"'):page.text.index('id="metrics"')]
    assert 'No config' in missing and 'No checkpoint' in missing and '1 line(s) of log.jsonl are not JSON' in missing
    capsys.readouterr()
    assert cli.main(['report', str(tmp_path / 'nowhere')]) == 2
    assert 'nowhere' in capsys.readouterr().err


def test_report_option_off_bad_and_failing(tmp_path):
    from attnkit.config import load_config
    from attnkit.engine import Trainer
    from attnkit.report import report_options
    path = tmp_path / 'toy.py'
    path.write_text(engine_toy.toy_config_text(str(tmp_path / 'w'),
                                               schedule="dict(by_epoch=True, max_epochs=1, warmup_iters=0)"))
    Trainer(load_config(str(path), {'runtime.report': False})).train()
    assert (tmp_path / 'w' / 'log.jsonl').is_file() and not (tmp_path / 'w' / 'report.html').exists()
    with pytest.raises(ConfigError, match="runtime.report.galery_images.*'gallery_images'"):
        Trainer(load_config(str(path), {'runtime.report': dict(galery_images=2)}))
    assert report_options(True) == dict(gallery_images=8, show=3, attention_images=0)
    assert report_options(dict(show=1)) == dict(gallery_images=8, show=1, attention_images=0)
    with pytest.raises(ConfigError, match='whole number'):
        report_options(dict(show=-1))
    # a report that cannot be written only warns: training ends normally
    import attnkit.report as report

    def broken(*args, **kwargs):
        raise OSError('disk full')
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, 'write_report', broken)
        with pytest.warns(UserWarning, match='Could not write the report.*disk full'):
            metrics = Trainer(load_config(str(path), {'work_dir': str(tmp_path / 'w2')})).train()
    assert 'neg_mse' in metrics and (tmp_path / 'w2' / 'model.safetensors').is_file()
    # a model without a per-image score (the toy regressor): curves and tables, the gallery named as missing
    Trainer(load_config(str(path), {'work_dir': str(tmp_path / 'w3')})).train()
    page = read_page(tmp_path / 'w3' / 'report.html')
    assert 'no per-image score for model type ToyModel' in page.text and 'curve-metrics' in page.ids


# ------------------------------------------------------------------------------------------ per-image scores
def test_detection_f1_by_hand():
    from attnkit.report.gallery import detection_f1
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    gt_labels = np.array([0, 1])
    dets = np.array([[0, 0, 10, 11],      # IoU 10/11 with box 0, class 0: hit
                     [0, 0, 10, 10],      # the same box again: a duplicate, a false positive
                     [20, 20, 30, 30],    # box 1 but class 0: false positive
                     [40, 40, 50, 50]], float)  # score below the threshold: not counted
    scores, labels = np.array([0.9, 0.8, 0.7, 0.1]), np.array([0, 0, 0, 1])
    assert detection_f1(dets, scores, labels, gt, gt_labels) == pytest.approx(2 * 1 / (3 + 2))
    assert detection_f1(gt, np.ones(2), gt_labels, gt, gt_labels) == 1.0
    assert detection_f1(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros(0)) == 1.0
    assert detection_f1(np.zeros((0, 4)), np.zeros(0), np.zeros(0), gt, gt_labels) == 0.0


def test_segmentation_miou_against_the_confusion_matrix():
    from attnkit.evaluation.miou import confusion_matrix
    from attnkit.report.gallery import segmentation_miou
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, (20, 30))
    gt = rng.integers(0, 3, (20, 30))
    gt[:3] = 255
    cm = np.asarray(confusion_matrix(pred, gt, 5, 255), np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    expected = np.mean(np.diag(cm)[union > 0] / union[union > 0])
    assert segmentation_miou(pred, gt) == pytest.approx(expected)
    assert segmentation_miou(gt, gt) == 1.0


class _Fake(nn.Module):
    """A stand-in model whose prediction is built from the batch's ground truth by ``predict(batch, index)``."""

    def __init__(self, metainfo, predict):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.metainfo, self.predict = metainfo, predict

    def forward(self, batch):
        return [self.predict(batch)]


def _decoded(scored):
    for s in scored:
        img = Image.open(io.BytesIO(s.png))
        img.load()
        assert min(img.size) >= 192  # enlarged so that captions are readable


def test_detection_gallery_scores_boxes_in_original_pixels(demo_data):
    from attnkit.builder import build_dataset
    from attnkit.report.gallery import pick_best_worst, score_images
    dataset = build_dataset(dict(type='CocoDetection', ann_file=demo_data['coco_val_json'],
                                 img_dir=demo_data['img_dir'], pipeline=[dict(type='Resize', height=96, width=96)]))

    def predict(batch):  # exact boxes (in original pixels) for even ids, boxes moved away for odd ids
        sx, sy = batch['metas'][0]['scale_factor']
        boxes = batch['boxes'][0] / torch.tensor([sx, sy, sx, sy])
        if int(batch['metas'][0]['id']) % 2:
            boxes = boxes + 200
        return {'boxes': boxes, 'scores': torch.full((len(boxes),), 0.9), 'labels': batch['labels'][0]}
    assert dataset[0]['meta']['scale_factor'] == (1.5, 1.5)
    scored = score_images(_Fake(dataset.metainfo, predict), dataset, 'detection', num_images=6)
    ids = [int(dataset[i]['meta']['id']) for i in range(6)]
    assert [s.score for s in scored] == [0.0 if i % 2 else 1.0 for i in ids]
    _decoded(scored)
    best, worst = pick_best_worst(scored, 2)
    assert all(s.score == 1.0 for s in best) and all(s.score == 0.0 for s in worst)
    assert not set(s.index for s in best) & set(s.index for s in worst)


def test_segmentation_and_vqa_galleries(demo_data):
    from attnkit.builder import build_dataset
    from attnkit.report.gallery import score_images
    seg = build_dataset(dict(type='VOCSegmentation', root=demo_data['voc_root'], pipeline=[],
                             split_file='ImageSets/Segmentation/val.txt', metainfo=dict(classes=CLASSES)))
    exact = lambda b: {'sem_seg': torch.where(b['masks'][0] == 255, 0, b['masks'][0])}  # noqa: E731
    assert [s.score for s in score_images(_Fake(seg.metainfo, exact), seg, 'segmentation', 3)] == [1.0] * 3
    vqa = build_dataset(dict(type='VQAv2Dataset', questions_file=demo_data['vqa_val_questions'],
                             annotations_file=demo_data['vqa_val_annotations'], img_dir=demo_data['img_dir'],
                             img_name_template='{image_id:06d}.jpg', pipeline=[], answer_min_count=1,
                             tokenizer=dict(type='word', min_count=1)))

    def answer(batch):  # the second-best scored answer, with a 4x4 attention map
        order = batch['answer_scores'][0].argsort(descending=True)
        return {'answer_ids': order[1:6], 'scores': torch.linspace(0.9, 0.1, 5), 'attention': torch.rand(4, 4)}
    fake = _Fake(vqa.metainfo, answer)
    fake.answers = vqa.metainfo['answers']
    scored = score_images(fake, vqa, 'vqa', 4)
    n = len(vqa)  # questions, ~10 per image in a row: the scored ones are spread over the set, on 4 images
    assert [s.index for s in scored] == [0, round((n - 1) / 3), round(2 * (n - 1) / 3), n - 1]
    assert len({vqa[s.index]['meta']['image_id'] for s in scored}) == 4
    assert [s.score for s in scored] == [float(vqa[s.index]['answer_scores'].sort(descending=True).values[1])
                                         for s in scored]
    assert all(s.question == vqa[s.index]['question'] for s in scored)
    _decoded(scored)
