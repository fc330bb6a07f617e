"""Questions and ten human-like answers about a shapes scene, in the VQA v2 schema.

Question kinds (8-12 questions per image, as in CLEVR rather than VQA v2's ~5, spread over the kinds the image
allows): ``color`` ("what color is the triangle?", only when exactly one
triangle), ``shape`` ("what shape is the red object?", only when red is unique), ``count_shape`` ("how many
circles are there?", 0-4), ``count_all`` ("how many objects are there?", 1-4), ``exists`` ("is there a blue
square?"), ``rel_yesno`` ("is the circle left of the square?") and ``rel_what`` ("what shape is left of the
green star?"), the last two only when the layout is unambiguous (boxes apart horizontally).

Answers are balanced within a split: a :class:`QuestionSampler` keeps per-kind answer counts and, among the
questions one image allows, picks the one whose answer has been given least — so colour answers are near
uniform, yes/no is 50/50 and counts spread over their range, and a question-only model cannot score high.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from .demo_scene import CLASSES, COLOURS, DemoObject

__all__ = ['QuestionSampler', 'make_answers', 'ANSWER_TYPE', 'QUESTION_TYPE']

PLURAL = {'circle': 'circles', 'square': 'squares', 'triangle': 'triangles', 'star': 'stars'}
NUMBER_WORDS = {'0': ('zero', 'none'), '1': ('one',), '2': ('two',), '3': ('three',), '4': ('four',)}
ANSWER_TYPE = {'color': 'other', 'shape': 'other', 'rel_what': 'other', 'count_shape': 'number',
               'count_all': 'number', 'exists': 'yes/no', 'rel_yesno': 'yes/no'}
QUESTION_TYPE = {'color': 'what color is the', 'shape': 'what shape is the', 'rel_what': 'what shape is',
                 'count_shape': 'how many', 'count_all': 'how many', 'exists': 'is there a', 'rel_yesno': 'is the'}
_WRONG_POOL = {'color': COLOURS, 'shape': CLASSES, 'rel_what': CLASSES, 'count_shape': ('0', '1', '2', '3', '4'),
               'count_all': ('1', '2', '3', '4'), 'exists': ('yes', 'no'), 'rel_yesno': ('yes', 'no')}
_MARGIN = 2  # pixels between boxes for "left of" to count as unambiguous


def _referring(objs: list[DemoObject], o: DemoObject, rng: np.random.Generator) -> str | None:
    """The shortest unambiguous phrase for ``o`` ("circle" or "red circle"), or None."""
    same_shape = sum(p.shape == o.shape for p in objs)
    same_both = sum(p.shape == o.shape and p.colour == o.colour for p in objs)
    if same_shape == 1 and rng.random() < 0.5:
        return o.shape
    return f'{o.colour} {o.shape}' if same_both == 1 else None


def _left_of(a: DemoObject, b: DemoObject) -> bool:
    return a.vis_box[2] + _MARGIN < b.vis_box[0]


def _candidates(objs: list[DemoObject], rng: np.random.Generator) -> dict[str, list[tuple[str, str]]]:
    """All askable (question, canonical answer) pairs per kind for one scene."""
    cand: dict[str, list[tuple[str, str]]] = defaultdict(list)
    shapes = Counter(o.shape for o in objs)
    colours = Counter(o.colour for o in objs)
    for o in objs:
        if shapes[o.shape] == 1:
            cand['color'].append((f'what color is the {o.shape}?', o.colour))
        if colours[o.colour] == 1:
            cand['shape'].append((f'what shape is the {o.colour} object?', o.shape))
    for s in CLASSES:
        cand['count_shape'].append((f'how many {PLURAL[s]} are there?', str(shapes[s])))
    cand['count_all'].append(('how many objects are there?' if rng.random() < 0.7 else
                              'how many shapes are there?', str(len(objs))))
    present = {(o.colour, o.shape) for o in objs}
    for c in COLOURS:
        for s in CLASSES:
            hard = any(o.colour == c or o.shape == s for o in objs)
            if (c, s) in present or hard or rng.random() < 0.3:  # absent pairs: mostly hard negatives
                cand['exists'].append((f'is there a {c} {s}?', 'yes' if (c, s) in present else 'no'))
    refs = {id(o): _referring(objs, o, rng) for o in objs}
    for a in objs:
        for b in objs:
            if a is b or refs[id(a)] is None or refs[id(b)] is None:
                continue
            if _left_of(a, b) or _left_of(b, a):
                word = 'left' if rng.random() < 0.5 else 'right'
                truth = _left_of(a, b) if word == 'left' else _left_of(b, a)
                cand['rel_yesno'].append((f'is the {refs[id(a)]} {word} of the {refs[id(b)]}?',
                                          'yes' if truth else 'no'))
    for ref in objs:
        phrase = f'{ref.colour} {ref.shape}'
        if sum(o.colour == ref.colour and o.shape == ref.shape for o in objs) != 1:
            continue
        others = [o for o in objs if o is not ref]
        left = [o for o in others if _left_of(o, ref)]
        right = [o for o in others if _left_of(ref, o)]
        if len(left) + len(right) != len(others):
            continue  # someone overlaps ref horizontally: ambiguous
        if len(left) == 1:
            cand['rel_what'].append((f'what shape is left of the {phrase}?', left[0].shape))
        if len(right) == 1:
            cand['rel_what'].append((f'what shape is right of the {phrase}?', right[0].shape))
    return cand


class QuestionSampler:
    """Chooses ``min_questions``-``max_questions`` questions per image, balancing answers per kind over all images
    of a split.

    Questions are picked in rounds: each round asks one new question of every kind the image still allows (the
    kinds asked least so far first), until the image's quota is reached or its questions run out. Many questions
    per image give the model more supervision per image it has to look at (training batches hold all questions
    of an image, so the backbone runs once for all of them).
    """

    def __init__(self, min_questions: int = 8, max_questions: int = 12) -> None:
        if not 1 <= min_questions <= max_questions:
            raise ValueError(f'need 1 <= min_questions <= max_questions, got {min_questions}, {max_questions}')
        self.min_questions, self.max_questions = min_questions, max_questions
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.kind_counts: Counter = Counter()

    def _pick(self, kind: str, options: list[tuple[str, str]], rng: np.random.Generator) -> tuple[str, str]:
        """The option whose answer this kind has given least (yes/no kinds: the rarer answer when possible)."""
        if kind in ('exists', 'rel_yesno'):
            want = min(('yes', 'no'), key=lambda a: (self.counts[kind][a], rng.random()))
            pool = [q for q in options if q[1] == want] or options
        else:
            low = min(self.counts[kind][a] for _, a in options)
            pool = [q for q in options if self.counts[kind][q[1]] == low]
        return pool[int(rng.integers(len(pool)))]

    def sample(self, objs: list[DemoObject], rng: np.random.Generator) -> list[tuple[str, str, str]]:
        """Returns [(kind, question, canonical answer)] for one scene (objects with ``vis_box`` filled)."""
        left = {k: list(v) for k, v in _candidates(objs, rng).items() if v}
        quota = int(rng.integers(self.min_questions, self.max_questions + 1))
        out: list[tuple[str, str, str]] = []
        while left and len(out) < quota:
            # rarer kinds first so the optional kinds (colour, shape, relations) are asked whenever possible
            for kind in sorted(left, key=lambda k: (self.kind_counts[k], rng.random())):
                if len(out) == quota:
                    break
                question, answer = self._pick(kind, left[kind], rng)
                left[kind] = [q for q in left[kind] if q[0] != question]
                if not left[kind]:
                    del left[kind]
                self.counts[kind][answer] += 1
                self.kind_counts[kind] += 1
                out.append((kind, question, answer))
        return out


def _variants(kind: str, answer: str) -> list[str]:
    """Spellings of ``answer`` that the official VQA normalisation maps back to it."""
    if ANSWER_TYPE[kind] == 'number':
        return [*NUMBER_WORDS[answer], NUMBER_WORDS[answer][0].capitalize()]
    if kind in ('shape', 'rel_what'):
        return [answer.capitalize(), f'{answer}.', f'a {answer}']
    return [answer.capitalize(), f'{answer}.', answer.upper()]


def make_answers(kind: str, answer: str, rng: np.random.Generator) -> list[dict]:
    """Ten answers: ~65 % the canonical string, the rest normalisation-equivalent spellings, and with
    probability 0.35 exactly one wrong answer (so at most 1 in 10 is wrong)."""
    variants = _variants(kind, answer)
    answers = []
    wrong_slot = int(rng.integers(10)) if rng.random() < 0.35 else -1
    for i in range(10):
        if i == wrong_slot:
            pool = [a for a in _WRONG_POOL[kind] if a != answer]
            text, conf = pool[int(rng.integers(len(pool)))], ('maybe', 'no')[int(rng.integers(2))]
        else:
            text = answer if rng.random() < 0.65 else variants[int(rng.integers(len(variants)))]
            conf = 'yes' if rng.random() < 0.9 else 'maybe'
        answers.append({'answer': text, 'answer_confidence': conf, 'answer_id': i + 1})
    return answers
