"""VQA v2 in the official JSON format: questions file, optional annotations file, images on disk.

Layout (official VQA v2 / COCO)::

    questions_file     {"data_subtype": "train2014", "questions": [{"image_id", "question", "question_id"}, ...]}
    annotations_file   {"annotations": [{"question_id", "answers": [{"answer", ...} x 10],
                                         "multiple_choice_answer", "answer_type", "question_type", ...}, ...]}
    img_dir/COCO_train2014_000000458752.jpg        (``img_name_template``, formatted with subtype and image_id)

The training split builds the vocabularies (answers; question words for the built-in tokenizer) and puts
them in ``metainfo``; validation/test splits and the checkpoint reuse them through ``metainfo=``. A test
split has no annotations file: its samples have no targets and are for prediction only.
"""
from __future__ import annotations

import functools
import json
import os
import random
import re
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from ...data import Pipeline, collate, read_image, sample_random
from ...data.checks import check_files_exist, resolve_inside
from ...errors import ConfigError, DataError
from ...registry import DATASETS
from .answer_bag import image_answer_bags, vocab_answer_types
from .answers import build_answer_vocab, normalize_answer, soft_scores
from .text import build_question_vocab, build_tokenizer

__all__ = ['VQAv2Dataset', 'swap_words']

DEFAULT_PIPELINE = (dict(type='Resize', height=448, width=448),)
DEFAULT_FLIP_WORDS = {'left': 'right', 'right': 'left'}
# questions-file ``data_subtype`` -> the subtype in the image file names, where they differ: the official test-dev
# questions ("test-dev2015") are about a subset of the test2015 images (COCO_test2015_<id>.jpg in test2015/).
IMAGE_SUBTYPES = {'test-dev2015': 'test2015'}


def swap_words(text: str, words: Mapping[str, str]) -> str:
    """Replace whole words of ``text`` by ``words[word]`` (case-insensitive; a capital first letter is kept).

    ``swap_words('Is the cat left of the dog?', {'left': 'right', 'right': 'left'})`` ->
    ``'Is the cat right of the dog?'``. The pattern is compiled once per word table (this runs for every
    question of every flipped image).
    """
    if not words:
        return text
    return _word_swapper(tuple(sorted((k.lower(), v) for k, v in words.items())))(text)


@functools.lru_cache(maxsize=16)
def _word_swapper(table: tuple[tuple[str, str], ...]) -> Callable[[str], str]:
    lookup = dict(table)
    pattern = re.compile(r'\b(' + '|'.join(re.escape(k) for k in sorted(lookup, key=len, reverse=True)) + r')\b',
                         re.IGNORECASE)

    def repl(m: re.Match) -> str:
        new = lookup[m.group(0).lower()]
        return new[:1].upper() + new[1:] if m.group(0)[:1].isupper() else new

    return lambda text: pattern.sub(repl, text)


def _load_json(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise DataError(f'VQA {what} file {path!r} does not exist.')
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f'VQA {what} file {path!r} is not readable JSON: {exc}') from exc


def _as_id(value: Any, path: str, index: int, key: str) -> int:
    """An integer id from a JSON record (ints, or strings of digits as some exports write them)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip('-').isdigit():
        raise DataError(f"VQA file {path!r}: record {index} has {key} {value!r:.60}; expected an integer.")
    return int(value)


@DATASETS.register_module()
class VQAv2Dataset(Dataset):
    """Visual question answering samples from the official VQA v2 files.

    Args:
        questions_file: the questions JSON (``questions`` list).
        annotations_file: the annotations JSON (``annotations`` list), or ``None`` for a test split.
        img_dir: folder of the images.
        img_name_template: image file name, formatted with ``subtype`` (the image subtype, see
            ``image_subtype``) and ``image_id``; the demo data uses ``'{image_id:06d}.jpg'``.
        image_subtype: the subtype the image files are named after; None derives it from the questions file's
            ``data_subtype`` — the same name, except that the official test-dev questions
            (``data_subtype: test-dev2015``) ask about the ``test2015`` images (``COCO_test2015_*.jpg``).
        pipeline: albumentations transform configs (resize; no flip here: a plain flip falsifies "left of"
            questions — use ``flip_prob``).
        flip_prob: probability of a question-aware horizontal flip per image (training splits): the image is
            mirrored and every question and answer about it has the words of ``flip_words`` swapped ("is the
            cat left of the dog?" -> "... right of ..."), so the pair stays true. A flipped answer outside the
            vocabulary gets a zero target (counted in ``stats['flipped_answers_outside_vocab']``).
        flip_words: the words a flip swaps (default left <-> right).
        view_per: which questions of an image share one random view (augmentation and flip). ``'epoch'``
            (default): all of them, for the whole epoch -- one draw per ``(seed, epoch, image)``, the same whatever
            the batching, workers or processes. ``'batch'``: those in one batch; each batch holding the image
            draws a new view (keyed by the image and its first question index in the batch), so with
            ``data.train.max_per_group`` (an image's questions spread over ~n/k batches) the backbone sees
            ~n/k different views of the image per epoch instead of the same view n/k times (docs/bench/vqa.md,
            "One view per epoch"). Still the same whatever the number of workers; with several processes, the
            same unless a rank boundary splits the image's questions of one batch.
        answer_min_count: answers kept in the vocabulary (training split only; see ``answers.py``).
        max_question_len: tokens per question (words for ``'word'``, sub-words incl. specials for ``'hf'``).
        tokenizer: ``dict(type='word', min_count=1)`` (built-in; vocabulary from these questions) or
            ``dict(type='hf', path='data/pretrained/bert-base-uncased')``. ``None``: from ``metainfo``, else words.
        metainfo: vocabularies from the training split or a checkpoint (then nothing is rebuilt here).

    A sample: ``image`` (3, H, W), ``meta`` (``id`` = question id, ``image_id``, ``file``, ``ori_size``,
    ``img_size``, ``scale_factor``), ``question`` (str), ``question_id`` (int), and with annotations
    ``answer_scores`` (A,) float soft targets. ``collate`` adds ``input_ids``/``attention_mask`` (N, L).

    Answer bags (for the answer-bag auxiliary loss, :mod:`~attnkit.tasks.vqa.answer_bag`): with annotations,
    ``answer_bags`` maps every image id to the vocabulary indices of the consensus answers
    (``multiple_choice_answer``) of ALL its questions, and ``collate`` adds ``answer_bag`` (M, A) bool, one row
    per distinct image of ``images`` (a mirrored view gets its left/right-swapped bag). Built from training
    annotations, ``metainfo['answer_types']`` (A,) gives each answer's type (``'other'``, ``'number'``,
    ``'yes/no'``; see :func:`~attnkit.tasks.vqa.answer_bag.vocab_answer_types`).

    Bad input: a file of the wrong kind, a malformed record, a question without annotation (when an
    annotations file is given) or a missing image raise :class:`DataError` naming file and record. Empty
    questions are skipped and answers outside the vocabulary get zero targets; both are counted in
    ``self.stats`` and reported in one warning.
    """

    def __init__(self, questions_file: str, annotations_file: str | None = None, img_dir: str = '',
                 img_name_template: str = 'COCO_{subtype}_{image_id:012d}.jpg',
                 pipeline: Sequence[Mapping[str, Any]] = DEFAULT_PIPELINE, answer_min_count: int = 9,
                 max_question_len: int = 14, tokenizer: Mapping[str, Any] | None = None,
                 metainfo: Mapping[str, Any] | None = None, flip_prob: float = 0.0,
                 flip_words: Mapping[str, str] | None = None, image_subtype: str | None = None,
                 view_per: str = 'epoch') -> None:
        if not 0.0 <= flip_prob <= 1.0:
            raise ConfigError(f'VQAv2Dataset flip_prob must be in [0, 1], got {flip_prob!r}.')
        if view_per not in ('epoch', 'batch'):
            raise ConfigError(f"VQAv2Dataset view_per must be 'epoch' or 'batch', got {view_per!r}.")
        self.view_per = view_per
        self.flip_prob = float(flip_prob)
        self.flip_words = dict(DEFAULT_FLIP_WORDS if flip_words is None else flip_words)
        self.questions_file = os.fspath(questions_file)
        self.annotations_file = None if annotations_file is None else os.fspath(annotations_file)
        self.img_dir = os.fspath(img_dir)
        self.img_name_template = img_name_template
        self.pipeline = Pipeline(pipeline)
        self.stats = {'questions': 0, 'empty_questions': 0, 'answers': 0, 'answers_outside_vocab': 0,
                      'questions_without_target': 0, 'flipped_answers_outside_vocab': 0}
        subtype, questions = self._read_questions()
        self.question_subtype = subtype
        self.subtype = image_subtype if image_subtype is not None else IMAGE_SUBTYPES.get(subtype, subtype)
        annotations = self._read_annotations(questions) if self.annotations_file else None
        self.metainfo = self._make_metainfo(metainfo, tokenizer, questions, annotations, answer_min_count,
                                            max_question_len)
        self.answer_to_index = {a: i for i, a in enumerate(self.metainfo['answers'])}
        self.records = self._make_records(questions, annotations)
        self.answer_bags: dict[int, tuple[int, ...]] = {}
        self._flip_bags: dict[int, tuple[int, ...]] = {}
        if annotations is not None:
            pairs = [(int(q['image_id']), annotations[int(q['question_id'])]) for q in questions]
            self.answer_bags = image_answer_bags(pairs, self.answer_to_index)
            if self.flip_prob > 0:
                self._flip_bags = image_answer_bags(pairs, self.answer_to_index,
                                                    lambda a: swap_words(a, self.flip_words))
        self._check_images()
        self._tokenizer = None
        self._warn()

    # ----------------------------------------------------------------------------------------- reading
    def _read_questions(self) -> tuple[str | None, list[dict]]:
        data = _load_json(self.questions_file, 'questions')
        if not isinstance(data, dict) or not isinstance(data.get('questions'), list):
            kind = ("an annotations file (it has 'annotations')" if isinstance(data, dict) and 'annotations' in data
                    else 'not a VQA questions file')
            raise DataError(f"VQA questions file {self.questions_file!r} has no 'questions' list: it is {kind}.")
        kept = []
        seen: dict[int, int] = {}  # question_id -> record index
        for i, q in enumerate(data['questions']):
            if not isinstance(q, dict) or not all(k in q for k in ('question_id', 'image_id', 'question')):
                raise DataError(f"VQA questions file {self.questions_file!r}: record {i} needs 'question_id', "
                                f"'image_id' and 'question'; got {q!r:.200}.")
            qid = _as_id(q['question_id'], self.questions_file, i, 'question_id')
            _as_id(q['image_id'], self.questions_file, i, 'image_id')
            if qid in seen:
                raise DataError(f"VQA questions file {self.questions_file!r}: question_id {qid} appears twice "
                                f"(records {seen[qid]} and {i}); question ids must be unique.")
            seen[qid] = i
            if not isinstance(q['question'], str) or not q['question'].strip():
                self.stats['empty_questions'] += 1
                continue
            kept.append(q)
        self.stats['questions'] = len(kept)
        if not kept:
            raise DataError(f'VQA questions file {self.questions_file!r} has no (non-empty) questions.')
        return data.get('data_subtype'), kept

    def _read_annotations(self, questions: list[dict]) -> dict[int, dict]:
        path = self.annotations_file
        data = _load_json(path, 'annotations')
        if not isinstance(data, dict) or not isinstance(data.get('annotations'), list):
            kind = ("a questions file (it has 'questions'); pass it as questions_file"
                    if isinstance(data, dict) and 'questions' in data else 'not a VQA annotations file')
            raise DataError(f"VQA annotations file {path!r} has no 'annotations' list: it is {kind}.")
        by_id: dict[int, dict] = {}
        where: dict[int, int] = {}
        for i, ann in enumerate(data['annotations']):
            answers = ann.get('answers') if isinstance(ann, dict) else None
            if (answers is None or 'question_id' not in ann or not isinstance(answers, list) or not answers
                    or not all(isinstance(a, dict) and isinstance(a.get('answer'), str) for a in answers)):
                raise DataError(f"VQA annotations file {path!r}: record {i} needs 'question_id' and a non-empty "
                                f"'answers' list of {{'answer': str}}; got {ann!r:.200}.")
            qid = _as_id(ann['question_id'], path, i, 'question_id')
            if qid in by_id:
                raise DataError(f"VQA annotations file {path!r}: question_id {qid} appears twice (records "
                                f"{where[qid]} and {i}); each question has one annotation.")
            by_id[qid], where[qid] = ann, i
        missing = [q['question_id'] for q in questions if int(q['question_id']) not in by_id]
        if missing:
            raise DataError(f'VQA annotations file {path!r} has no annotation for {len(missing)} question(s) of '
                            f'{self.questions_file!r}, e.g. question_id {missing[0]}: the two files do not belong '
                            'together.')
        return by_id

    def _check_images(self) -> None:
        """Every image the questions refer to lies inside ``img_dir`` and exists (one stat per distinct image)."""
        first: dict[int, int] = {}
        for rec in self.records:
            first.setdefault(rec['image_id'], rec['question_id'])
        paths = [self.image_path(image_id, record=f'question_id {qid} in {self.questions_file!r}')
                 for image_id, qid in first.items()]
        check_files_exist(paths, source=f'VQA questions file {self.questions_file!r} (images in {self.img_dir!r})')

    def _make_metainfo(self, metainfo: Mapping[str, Any] | None, tokenizer: Mapping[str, Any] | None,
                       questions: list[dict], annotations: dict[int, dict] | None, min_count: int,
                       max_len: int) -> dict[str, Any]:
        if metainfo is not None:
            meta = {k: (list(v) if isinstance(v, (list, tuple)) else (dict(v) if isinstance(v, Mapping) else v))
                    for k, v in dict(metainfo).items()}
            if not meta.get('answers') or 'tokenizer' not in meta:
                raise ConfigError("VQAv2Dataset metainfo needs 'answers' and 'tokenizer' (from the training split "
                                  f"or a checkpoint); got keys {sorted(meta)}.")
            if tokenizer is not None and dict(tokenizer).get('type') != meta['tokenizer'].get('type'):
                raise ConfigError(f"VQAv2Dataset tokenizer {dict(tokenizer)!r} differs from the one the vocabularies "
                                  f"were built with ({meta['tokenizer']!r}).")
            return meta
        if annotations is None:
            raise ConfigError(f'VQAv2Dataset({self.questions_file!r}) has neither annotations nor metainfo: a '
                              'split without answers needs the vocabularies of the training split (metainfo=...).')
        anns = [annotations[int(q['question_id'])] for q in questions]
        answers = build_answer_vocab(anns, min_count)
        if not answers:
            raise DataError(f'VQA annotations file {self.annotations_file!r}: no answer is the most common answer '
                            f'of >= {min_count} questions; lower answer_min_count.')
        tok = dict(tokenizer or {'type': 'word'})
        tok.setdefault('max_len', max_len)
        meta: dict[str, Any] = {'answers': answers, 'tokenizer': tok,
                                'answer_types': vocab_answer_types(anns, answers)}
        if tok.get('type') == 'word':
            meta['question_vocab'] = build_question_vocab((q['question'] for q in questions),
                                                          int(tok.get('min_count', 1)))
        elif tok.get('type') != 'hf':
            raise ConfigError(f"Unknown tokenizer type {tok.get('type')!r}; use 'word' or 'hf'.")
        return meta

    def _make_records(self, questions: list[dict], annotations: dict[int, dict] | None) -> list[dict]:
        records = []
        for q in questions:
            qid = int(q['question_id'])
            rec = {'question_id': qid, 'image_id': int(q['image_id']), 'question': q['question'].strip()}
            if annotations is not None:
                ann = annotations[qid]
                answers = [a['answer'] for a in ann['answers']]
                scores, outside = soft_scores(answers, self.answer_to_index)
                self.stats['answers'] += len(answers)
                self.stats['answers_outside_vocab'] += outside
                self.stats['questions_without_target'] += not scores
                rec.update(answers=answers, answer_type=ann.get('answer_type', 'other'), scores=scores,
                           question_type=ann.get('question_type'))
                if self.flip_prob > 0:
                    flipped = [swap_words(a, self.flip_words) for a in answers]
                    if flipped != answers:  # e.g. "left" -> "right": targets of the mirrored image
                        rec['flip_scores'], _ = soft_scores(flipped, self.answer_to_index)
                        self.stats['flipped_answers_outside_vocab'] += sum(
                            normalize_answer(a) in self.answer_to_index and normalize_answer(f) not in
                            self.answer_to_index for a, f in zip(answers, flipped))
            records.append(rec)
        return records

    def _warn(self) -> None:
        s = self.stats
        if s['empty_questions']:
            warnings.warn(f"{self.questions_file}: skipped {s['empty_questions']} empty question(s).", stacklevel=3)
        if s['answers_outside_vocab']:
            warnings.warn(f"{self.annotations_file}: {s['answers_outside_vocab']} of {s['answers']} answers are "
                          f"outside the {len(self.metainfo['answers'])}-answer vocabulary (zero targets); "
                          f"{s['questions_without_target']} question(s) have no target at all.", stacklevel=3)
        if s['flipped_answers_outside_vocab']:
            warnings.warn(f"{self.annotations_file}: {s['flipped_answers_outside_vocab']} answers swapped by the "
                          f"question-aware flip ({self.flip_words}) are outside the answer vocabulary; flipped "
                          'images give them zero targets.', stacklevel=3)

    # ----------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, image_id: int, record: str | None = None) -> str:
        """The image file of ``image_id``; a DataError when the template makes a name outside ``img_dir``."""
        try:
            name = self.img_name_template.format(subtype=self.subtype, image_id=image_id)
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            raise ConfigError(f'img_name_template {self.img_name_template!r} cannot be formatted with '
                              f'subtype={self.subtype!r}, image_id={image_id}: {exc}') from exc
        return resolve_inside(self.img_dir, name, record=record or f'image_id {image_id} of {self.questions_file!r}')

    def group_keys(self, by: str) -> list[int]:
        """Per-question group keys for batching (``data.train.group_by``): ``'image'`` -> the image ids, so a
        batch holds all questions of its images and the backbone runs once per image."""
        if by != 'image':
            raise ConfigError(f"VQAv2Dataset can group questions by 'image' only, got group_by={by!r}.")
        return [r['image_id'] for r in self.records]

    def get_ground_truth(self, question_id: int) -> tuple[list[str], str] | None:
        """``(human answers, answer_type)`` of a question, ``None`` without annotations or for an unknown id."""
        if not hasattr(self, '_by_qid'):
            self._by_qid = {r['question_id']: r for r in self.records}
        rec = self._by_qid.get(int(question_id))
        if rec is None or 'answers' not in rec:
            return None
        return rec['answers'], rec['answer_type']

    def get_question(self, question_id: int) -> tuple[str, str | None] | None:
        """``(question text, the annotations' question_type or None)``; ``None`` for an unknown id."""
        if not hasattr(self, '_by_qid'):
            self._by_qid = {r['question_id']: r for r in self.records}
        rec = self._by_qid.get(int(question_id))
        return None if rec is None else (rec['question'], rec.get('question_type'))

    def _load(self, rec: dict[str, Any], view: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Read and transform the image of ``rec``: the (3, H, W) image and its meta (without the question id).

        ``view``: with ``view_per='batch'``, the index of the image's first question in the batch (part of the
        draw's key); None keys the draw by the image alone (one view per epoch).
        """
        path = self.image_path(rec['image_id'])
        image = read_image(path, record=f"question_id {rec['question_id']} in {self.questions_file}")
        # the questions of an image share its view (augmentation and flip): the draws are keyed by the image (and,
        # with view_per='batch', by its first question in the batch), so they do not depend on which question,
        # worker or process loads it first
        key = ('image', rec['image_id']) if view is None else ('image', rec['image_id'], int(view))
        with sample_random(key):
            out = self.pipeline(image)
            flipped = self.flip_prob > 0 and random.random() < self.flip_prob
        h0, w0 = image.shape[:2]
        h, w = out['img_size']
        return (out['image'].flip(-1) if flipped else out['image'],
                {'image_id': rec['image_id'], 'file': path, 'ori_size': (h0, w0), 'img_size': (h, w),
                 'scale_factor': (w / w0, h / h0), 'flipped': flipped})

    def _sample(self, rec: dict[str, Any], image: torch.Tensor, meta: dict[str, Any]) -> dict[str, Any]:
        flipped = meta.get('flipped', False)
        question = swap_words(rec['question'], self.flip_words) if flipped else rec['question']
        sample = {'image': image, 'meta': {'id': rec['question_id'], **meta}, 'question': question,
                  'question_id': rec['question_id']}
        if 'scores' in rec:
            target = torch.zeros(len(self.answer_to_index), dtype=torch.float32)
            scores = rec['flip_scores'] if flipped and 'flip_scores' in rec else rec['scores']
            for idx, score in scores.items():
                target[idx] = score
            sample['answer_scores'] = target
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        return self._sample(rec, *self._load(rec))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch of samples (the DataLoader calls this instead of ``__getitem__`` per index): each distinct
        image is read and transformed once and shared by all of its questions in the batch."""
        loaded: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}
        samples = []
        for index in indices:
            rec = self.records[index]
            if rec['image_id'] not in loaded:
                loaded[rec['image_id']] = self._load(rec, index if self.view_per == 'batch' else None)
            samples.append(self._sample(rec, *loaded[rec['image_id']]))
        return samples

    @property
    def tokenizer(self):
        """The question tokenizer (built on first use, from ``metainfo``)."""
        if self._tokenizer is None:
            self._tokenizer = build_tokenizer(self.metainfo['tokenizer'], self.metainfo.get('question_vocab'))
        return self._tokenizer

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The standard batch plus ``questions`` (list), ``question_ids`` (list), ``input_ids`` and
        ``attention_mask`` (N, L) long, ``answer_scores`` (N, A) and ``answer_bag`` (M, A) bool (every answer
        of the image's questions, see the class docstring) when annotated.

        Questions about the same image share one image: ``images`` is (M, 3, H, W) with the M distinct
        images — an image and its mirror (``flip_prob``) count as two, so samples loaded one by one with
        different flips keep their own view (``__getitems__`` loads each image once per batch, one flip) — and
        ``image_index`` (N,) long maps each question to its image, so the model runs the backbone M times, not N.
        """
        def view(s: dict[str, Any]) -> tuple[int, bool]:  # an image mirrored by the flip is another image
            return s['meta']['image_id'], s['meta'].get('flipped', False)

        first: dict[tuple[int, bool], int] = {}  # image view -> position of its first question (insertion-ordered)
        for i, s in enumerate(samples):
            first.setdefault(view(s), i)
        slot = {key: k for k, key in enumerate(first)}
        images = collate([{'image': samples[i]['image']} for i in first.values()])['images']
        batch = collate([{k: v for k, v in s.items() if k != 'image'} for s in samples])
        batch['images'] = images
        batch['image_index'] = torch.tensor([slot[view(s)] for s in samples], dtype=torch.long)
        for meta in batch['metas']:
            meta['pad_size'] = tuple(images.shape[-2:])
        batch['questions'] = batch.pop('question')
        batch['question_ids'] = batch.pop('question_id')
        batch.update(self.tokenizer(batch['questions']))
        if self.annotations_file is not None:  # the complete answer bag of each image view (answer_bag.py)
            bag = torch.zeros(len(first), len(self.answer_to_index), dtype=torch.bool)
            for (image_id, flipped), k in slot.items():
                bag[k, list((self._flip_bags if flipped else self.answer_bags).get(image_id, ()))] = True
            batch['answer_bag'] = bag
        return batch
