"""VQA accuracy, the way the official VQA evaluation code (GT-Vision-Lab/VQA, ``vqaEval.py``) computes it.

For each question, with the ten human answers ``gts`` and the predicted answer ``pred``, the rule of the
official script as it stands on its master branch (commit a013f00; the version the maintainers discuss in
GT-Vision-Lab/VQA#14) — ``legacy=False``, the default:

1. whitespace cleanup of every human answer and of ``pred``: newlines and tabs become spaces, ends stripped;
2. only when the ten (cleaned) human answers are **not** all identical strings, ``pred`` and every human
   answer go through :func:`process_punctuation` and then :func:`process_digit_article` (punctuation removed or
   turned into spaces, lower case, number words to digits, articles dropped, contractions restored).
   Unanimous answers are compared as they are (meant for text read off the image, per the maintainers);
3. accuracy = mean over the ten leave-one-out subsets of nine answers of ``min(1, #matches / 3)``.

``legacy=True`` is the rule of the earlier version of the same script (e.g. commit c4e6a0e; the one described
in Cyanogenoid/pytorch-vqa#5, 2017), for comparing with papers evaluated before the change:

1'. ``pred`` is *always* whitespace-cleaned, then :func:`process_punctuation` and :func:`process_digit_article`;
2'. the human answers get no whitespace cleanup and, only when they are not all identical, only
    :func:`process_punctuation` — no lower-casing, no number words to digits, no article removal;
3'. the same leave-one-out mean of ``min(1, #matches / 3)``.

So they differ when the humans wrote something that step 2 would change other than punctuation: ten times
``yes`` against ``Yes`` (master 0, legacy 1: the prediction is lower-cased); ``two`` ×4 + ``three`` ×6 against
``two`` (master 1, legacy 0: the prediction became ``2``, the human answers stayed ``two``); ``a dog`` ×3 +
``cat`` ×7 against ``dog`` (master 0.9, legacy 0).

Overall accuracy is the mean over questions; per answer type (``yes/no``, ``number``, ``other``) too.
The normalisation functions here are also what builds the answer vocabulary
(:mod:`attnkit.tasks.vqa.answers`), so predictions are already normalised when they are written.
"""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from typing import Any, Mapping, Sequence

from ..errors import DataError
from ..errors import ConfigError
from ..registry import METRICS
from .base import BaseEvaluator

__all__ = ['CONTRACTIONS', 'NUMBER_WORDS', 'ARTICLES', 'PUNCTUATION', 'clean_whitespace', 'process_punctuation',
           'process_digit_article', 'vqa_accuracy', 'VQAAccuracy']

# Contractions written without their apostrophe -> the apostrophe form (the official table).
_CONTRACTION_PAIRS = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've|couldnt've couldn't've
didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've|hadn'tve hadn't've|hasnt hasn't
havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's|howd how'd|howll how'll|hows how's|Id've I'd've
I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd|itd've it'd've|it'dve it'd've|itll it'll|let's let's
maam ma'am|mightnt mightn't|mightnt've mightn't've|mightn'tve mightn't've|mightve might've|mustnt mustn't
mustve must've|neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at
'ow'sat 'ow's'at|shant shan't|shed've she'd've|she'dve she'd've|she's she's|shouldve should've
shouldnt shouldn't|shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd
somebodyd've somebody'd've|somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's
someoned someone'd|someoned've someone'd've|someone'dve someone'd've|someonell someone'll|someones someone's
somethingd something'd|somethingd've something'd've|something'dve something'd've|somethingll something'll
thats that's|thered there'd|thered've there'd've|there'dve there'd've|therere there're|theres there's
theyd they'd|theyd've they'd've|they'dve they'd've|theyll they'll|theyre they're|theyve they've|twas 'twas
wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've|werent weren't|whatll what'll|whatre what're
whats what's|whatve what've|whens when's|whered where'd|wheres where's|whereve where've|whod who'd
whod've who'd've|who'dve who'd've|wholl who'll|whos who's|whove who've|whyll why'll|whyre why're|whys why's
wont won't|wouldve would've|wouldnt wouldn't|wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all
yall'll y'all'll|y'allll y'all'll|yall'd've y'all'd've|y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd
youd've you'd've|you'dve you'd've|youll you'll|youre you're|youve you've
"""
CONTRACTIONS: dict[str, str] = dict(pair.split() for pair in re.split(r'[|\n]', _CONTRACTION_PAIRS.strip()))

NUMBER_WORDS: dict[str, str] = {'none': '0', 'zero': '0', 'one': '1', 'two': '2', 'three': '3', 'four': '4',
                                'five': '5', 'six': '6', 'seven': '7', 'eight': '8', 'nine': '9', 'ten': '10'}
ARTICLES: frozenset[str] = frozenset({'a', 'an', 'the'})
PUNCTUATION: tuple[str, ...] = (';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<',
                                '@', '`', ',', '?', '!')
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a (mistyped) look-ahead that never
# blocks, so in effect a period is removed unless a digit follows it ("2.5" keeps its period).
_PERIOD = re.compile(r'\.(?!\d)')
_DIGIT_COMMA_DIGIT = re.compile(r'(\d)(,)(\d)')


def clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip both ends (applied to every answer)."""
    return text.replace('\n', ' ').replace('\t', ' ').strip()


def process_punctuation(text: str) -> str:
    """The official punctuation rule.

    A punctuation mark is deleted when it touches a space somewhere in the text (``"yes !"``) or when the text
    has a digit-comma-digit group (``"1,000"``); otherwise it becomes a space (``"black/white"`` ->
    ``"black white"``). Periods not followed by a digit are then deleted.
    """
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if has_digit_comma or (p + ' ') in text or (' ' + p) in text:
            out = out.replace(p, '')
        else:
            out = out.replace(p, ' ')
    return _PERIOD.sub('', out)


def process_digit_article(text: str) -> str:
    """Lower case, number words to digits, articles dropped, contractions restored, single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return ' '.join(CONTRACTIONS.get(w, w) for w in words)


def vqa_accuracy(prediction: str, gt_answers: Sequence[str], legacy: bool = False) -> float:
    """Official VQA accuracy of one predicted answer against the human answers (normally ten).

    Args:
        prediction: the predicted answer string.
        gt_answers: the human answers as given in the annotation file.
        legacy: the earlier official rule (see the module docstring) instead of the current one.

    Returns:
        Mean over the leave-one-out subsets of ``min(1, matches / 3)``, in [0, 1].
    """
    if not gt_answers:
        raise ValueError('vqa_accuracy needs at least one human answer.')
    if legacy:
        gts = list(gt_answers)
        pred = process_digit_article(process_punctuation(clean_whitespace(prediction)))
        if len(set(gts)) > 1:
            gts = [process_punctuation(a) for a in gts]
    else:
        gts = [clean_whitespace(a) for a in gt_answers]
        pred = clean_whitespace(prediction)
        if len(set(gts)) > 1:
            gts = [process_digit_article(process_punctuation(a)) for a in gts]
            pred = process_digit_article(process_punctuation(pred))
    matches = sum(a == pred for a in gts)
    # leaving out answer i leaves ``matches - (gts[i] == pred)`` matches among the others
    accs = [min(1.0, (matches - (a == pred)) / 3.0) for a in gts]
    return sum(accs) / len(accs)


@METRICS.register_module()
class VQAAccuracy(BaseEvaluator):
    """VQA accuracy (official rules, current master by default), overall and per answer type.

    Ground truth comes from the evaluated dataset (``dataset.get_ground_truth(question_id)`` returning
    ``(answers, answer_type)``, as :class:`attnkit.tasks.vqa.VQAv2Dataset` provides) or, without a dataset,
    from an official annotations file.

    Args:
        dataset: the evaluated dataset.
        annotations_file: an official VQA v2 annotations JSON, used when ``dataset`` is ``None``.
        legacy: score with the earlier official rule (module docstring), to compare with older papers.
        question_kinds: per-question-kind accuracy besides the answer types: ``'question_type'`` groups by the
            annotations' ``question_type`` field; a mapping ``{kind: regex}`` groups by the first regex that
            matches the question text (case-insensitive ``re.search``, in the mapping's order; questions matching
            none are counted under ``'unmatched'``). Needs the evaluated dataset (``get_question``).

    ``compute()`` returns ``{'accuracy': overall, 'accuracy_yes/no': ..., 'accuracy_number': ...,
    'accuracy_other': ..., 'num_questions': n}`` (accuracies in [0, 1]), and with ``question_kinds`` one
    ``kind_<name>`` accuracy and ``num_kind_<name>`` count per kind; a split without annotations (test)
    gives ``{}`` — use :meth:`dump_results` to write the results file for the evaluation server.
    """

    def __init__(self, dataset: Any = None, annotations_file: str | None = None, legacy: bool = False,
                 question_kinds: str | Mapping[str, str] | None = None) -> None:
        super().__init__(dataset)
        self.legacy = bool(legacy)
        self._kinds = _compile_kinds(question_kinds)
        if self._kinds is not None and not hasattr(dataset, 'get_question'):
            raise ConfigError('VQAAccuracy question_kinds needs the evaluated VQA dataset (with get_question); '
                              f'got {type(dataset).__name__}.')
        self._gt: dict[int, tuple[list[str], str]] | None = None
        if dataset is None and annotations_file is not None:
            self._gt = load_ground_truth(annotations_file)

    def process(self, batch: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]]) -> None:
        """Keep ``{'question_id', 'answer'}`` per prediction (the answer as predicted: normalised already)."""
        for pred in predictions:
            self.results.append({'question_id': int(pred['question_id']), 'answer': str(pred['answer'])})

    def _ground_truth(self, question_id: int) -> tuple[list[str], str] | None:
        if self._gt is not None:
            return self._gt.get(question_id)
        if self.dataset is not None and hasattr(self.dataset, 'get_ground_truth'):
            return self.dataset.get_ground_truth(question_id)
        return None

    def compute(self) -> dict[str, float]:
        """Overall and per-answer-type accuracy over ``self.results`` (each question once)."""
        per_type: dict[str, list[float]] = defaultdict(list)
        per_kind: dict[str, list[float]] = defaultdict(list)
        scores: list[float] = []
        seen: set[int] = set()
        for rec in self.results:
            qid = rec['question_id']
            if qid in seen:
                continue
            seen.add(qid)
            gt = self._ground_truth(qid)
            if gt is None:
                continue
            answers, answer_type = gt
            acc = vqa_accuracy(rec['answer'], answers, legacy=self.legacy)
            scores.append(acc)
            per_type[answer_type].append(acc)
            if self._kinds is not None:
                per_kind[self._kind_of(qid)].append(acc)
        if not scores:
            return {}
        out = {'accuracy': sum(scores) / len(scores)}
        for answer_type in sorted(per_type):
            accs = per_type[answer_type]
            out[f'accuracy_{answer_type}'] = sum(accs) / len(accs)
        out['num_questions'] = float(len(scores))
        for kind, accs in per_kind.items():
            out[f'kind_{kind}'] = sum(accs) / len(accs)
            out[f'num_kind_{kind}'] = float(len(accs))
        return out

    def _kind_of(self, question_id: int) -> str:
        """The question's kind: its annotated question_type, or the first ``question_kinds`` regex it matches."""
        found = self.dataset.get_question(question_id)
        if found is None:
            return 'unmatched'
        text, question_type = found
        if isinstance(self._kinds, str):
            return question_type or 'unmatched'
        return next((kind for kind, pattern in self._kinds.items() if pattern.search(text)), 'unmatched')

    def summary(self) -> str:
        """A small table: answer type, questions, accuracy (%)."""
        metrics = self.compute()
        if not metrics:
            return 'VQA accuracy: no ground truth for these questions (test split?).'
        lines = [f"{'answer type':<12} {'accuracy %':>10}"]
        for key, value in metrics.items():
            if key.startswith('accuracy'):
                name = key[len('accuracy_'):] if key != 'accuracy' else 'overall'
                lines.append(f'{name:<12} {100 * value:>10.2f}')
        lines.append(f"questions: {int(metrics['num_questions'])}")
        kinds = [k[len('kind_'):] for k in metrics if k.startswith('kind_')]
        if kinds:
            lines.append(f"{'question kind':<16} {'questions':>9} {'accuracy %':>10}")
            for kind in kinds:
                lines.append(f"{kind:<16} {int(metrics['num_kind_' + kind]):>9} {100 * metrics['kind_' + kind]:>10.2f}")
        return '\n'.join(lines)

    def dump_results(self, path: str | os.PathLike) -> str:
        """Write the official results file ``[{"question_id": int, "answer": str}, ...]``; returns the path."""
        seen: set[int] = set()
        rows = []
        for rec in self.results:
            if rec['question_id'] not in seen:
                seen.add(rec['question_id'])
                rows.append({'question_id': rec['question_id'], 'answer': rec['answer']})
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(rows, f)
        return path


def _compile_kinds(kinds: str | Mapping[str, str] | None) -> str | dict[str, 're.Pattern[str]'] | None:
    """``'question_type'``, ``{kind: compiled regex}`` or None; a ConfigError for anything else."""
    if kinds is None or kinds == 'question_type':
        return kinds
    if not isinstance(kinds, Mapping) or not kinds:
        raise ConfigError(f"VQAAccuracy question_kinds must be 'question_type' or a non-empty {{kind: regex}} "
                          f'mapping, got {kinds!r}.')
    compiled = {}
    for kind, pattern in kinds.items():
        try:
            compiled[str(kind)] = re.compile(pattern, re.IGNORECASE)
        except (re.error, TypeError) as exc:
            raise ConfigError(f'VQAAccuracy question_kinds[{kind!r}] = {pattern!r} is not a regular expression: '
                              f'{exc}') from None
    return compiled


def load_ground_truth(annotations_file: str | os.PathLike) -> dict[int, tuple[list[str], str]]:
    """``{question_id: (ten answers, answer_type)}`` from an official annotations JSON."""
    path = os.fspath(annotations_file)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f'Cannot read VQA annotations file {path!r}: {exc}') from exc
    anns = data.get('annotations') if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise DataError(f"VQA annotations file {path!r} has no 'annotations' list.")
    return {int(a['question_id']): ([ans['answer'] for ans in a['answers']], a.get('answer_type', 'other'))
            for a in anns}
