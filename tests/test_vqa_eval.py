"""VQA accuracy (official rules) on hand-computed cases, and the VQAAccuracy evaluator."""
import json

import pytest

from attnkit.errors import DataError
from attnkit.evaluation.vqa import (VQAAccuracy, load_ground_truth, process_digit_article, process_punctuation,
                                    vqa_accuracy)
from attnkit.registry import METRICS, build


def test_leave_one_out_mean_of_min_one_third():
    # 2 of 10 match: leaving out a matching one leaves 1 match (1/3), leaving out another leaves 2 (2/3)
    gts = ['cat', 'cat'] + ['dog'] * 8
    assert vqa_accuracy('cat', gts) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    # 3 matches: 2/3 for the three, 1 for the seven others
    assert vqa_accuracy('cat', ['cat'] * 3 + ['dog'] * 7) == pytest.approx((3 * (2 / 3) + 7) / 10)
    assert vqa_accuracy('cat', ['cat'] * 4 + ['dog'] * 6) == pytest.approx(1.0)
    assert vqa_accuracy('cow', ['cat'] * 4 + ['dog'] * 6) == 0.0
    assert vqa_accuracy('cat', ['cat'] + ['dog'] * 9) == pytest.approx(9 * (1 / 3) / 10)


def test_number_words_and_digits_match():
    gts = ['two', '2', 'Two'] + ['3'] * 7
    assert vqa_accuracy('2', gts) == pytest.approx((3 * (2 / 3) + 7) / 10)
    assert vqa_accuracy('two', gts) == pytest.approx((3 * (2 / 3) + 7) / 10)
    # 'none' is a number word too (the official table maps it to 0)
    assert vqa_accuracy('0', ['none', 'zero', '0', '1', '1', '1', '1', '1', '1', '1']) == pytest.approx(0.9)


def test_articles_and_trailing_period_dropped():
    gts = ['a dog', 'the dog', 'dog', 'Dog.'] + ['cat'] * 6
    assert vqa_accuracy('dog', gts) == pytest.approx(1.0)
    assert vqa_accuracy('yes', ['yes.', 'yes.', 'yes.'] + ['no'] * 7) == pytest.approx(0.9)


def test_unanimous_answers_are_compared_raw():
    # official rule: no normalisation at all when the ten answers are identical strings
    assert vqa_accuracy('yes', ['Yes'] * 10) == 0.0
    assert vqa_accuracy('Yes', ['Yes'] * 10) == 1.0
    # different case is *not* unanimous: everything is normalised (lower-cased) and matches
    assert vqa_accuracy('yes', ['Yes'] * 5 + ['yes'] * 5) == pytest.approx(1.0)
    # whitespace cleanup always applies
    assert vqa_accuracy(' yes\n', ['yes\t'] * 10) == 1.0


def test_punctuation_rules():
    assert process_punctuation('black/white') == 'black white'  # no space next to it: becomes a space
    assert process_punctuation('yes !') == 'yes '              # touches a space: deleted
    assert process_punctuation('1,000') == '1000'              # digit,digit: every mark deleted
    assert process_punctuation('2.5') == '2.5'                 # period before a digit stays
    assert process_punctuation('end.') == 'end'
    assert process_digit_article('Dont know') == "don't know"
    assert process_digit_article('an Apple  the three') == 'apple 3'


class _GT:
    def __init__(self, table):
        self.table = table

    def get_ground_truth(self, qid):
        return self.table.get(qid)


def test_evaluator_overall_per_type_and_results_file(tmp_path):
    ds = _GT({1: (['yes'] * 10, 'yes/no'), 2: (['2'] * 4 + ['3'] * 6, 'number'), 3: (['red'] * 10, 'other')})
    ev = build(METRICS, dict(type='VQAAccuracy'), dataset=ds)
    ev.process({}, [{'question_id': 1, 'answer': 'yes'}, {'question_id': 2, 'answer': '3'}])
    ev.process({}, [{'question_id': 3, 'answer': 'blue'}, {'question_id': 1, 'answer': 'yes'}])  # duplicate id
    m = ev.compute()
    assert list(m)[0] == 'accuracy'
    assert m['accuracy'] == pytest.approx((1 + 1 + 0) / 3)
    assert m['accuracy_yes/no'] == 1.0 and m['accuracy_number'] == 1.0 and m['accuracy_other'] == 0.0
    assert m['num_questions'] == 3
    assert 'overall' in ev.summary()
    path = ev.dump_results(tmp_path / 'out' / 'results.json')
    rows = json.loads(open(path).read())
    assert rows == [{'question_id': 1, 'answer': 'yes'}, {'question_id': 2, 'answer': '3'},
                    {'question_id': 3, 'answer': 'blue'}]


def test_evaluator_from_annotation_file_and_test_split(tmp_path):
    ann = {'annotations': [{'question_id': 7, 'answer_type': 'other',
                            'answers': [{'answer': 'a cat'}] * 5 + [{'answer': 'dog'}] * 5}]}
    (tmp_path / 'a.json').write_text(json.dumps(ann))
    ev = VQAAccuracy(annotations_file=str(tmp_path / 'a.json'))
    ev.process({}, [{'question_id': 7, 'answer': 'cat'}])
    assert ev.compute()['accuracy'] == 1.0
    ev_test = VQAAccuracy(dataset=_GT({}))
    ev_test.process({}, [{'question_id': 5, 'answer': 'cat'}])
    assert ev_test.compute() == {}
    (tmp_path / 'q.json').write_text(json.dumps({'questions': []}))
    with pytest.raises(DataError, match="no 'annotations'"):
        load_ground_truth(tmp_path / 'q.json')


def test_master_and_legacy_rules_differ_where_the_scripts_do():
    # references by hand: leave-one-out mean of min(1, matches among the other nine / 3)
    # 1) ten 'yes' against 'Yes': master compares unanimous answers raw (0); legacy always lower-cases the
    #    prediction and leaves unanimous answers alone -> 'yes' matches all ten (1)
    assert vqa_accuracy('Yes', ['yes'] * 10) == 0.0
    assert vqa_accuracy('Yes', ['yes'] * 10, legacy=True) == 1.0
    # 2) 'two' x4 + 'three' x6 against 'two': master turns every answer into digits -> 4 matches -> 1.0;
    #    legacy turns only the prediction into '2' and the human 'two's stay -> 0
    gts = ['two'] * 4 + ['three'] * 6
    assert vqa_accuracy('two', gts) == 1.0
    assert vqa_accuracy('two', gts, legacy=True) == 0.0
    # 3) 'a dog' x3 + 'cat' x7 against 'dog': master drops the article of the humans' answers -> 3 matches:
    #    (3 * 2/3 + 7 * 1) / 10 = .9; legacy keeps 'a dog' (punctuation only) -> 0
    gts = ['a dog'] * 3 + ['cat'] * 7
    assert vqa_accuracy('dog', gts) == pytest.approx(0.9)
    assert vqa_accuracy('dog', gts, legacy=True) == 0.0
    # 4) punctuation of the humans' answers is handled by both: 'yes.' x2 + 'yes' + 'no' x7 against 'yes'
    #    -> 3 matches -> (3 * 2/3 + 7) / 10 = .9 in both
    gts = ['yes.', 'yes.', 'yes'] + ['no'] * 7
    assert vqa_accuracy('yes', gts) == pytest.approx(0.9)
    assert vqa_accuracy('yes', gts, legacy=True) == pytest.approx(0.9)
    # 5) whitespace: legacy does not clean the humans' answers -> ' cat' x2 + 'cat' + 'dog' x7 against 'cat':
    #    master 3 matches (.9); legacy 1 match: (1 * 0 + 9 * 1/3) / 10 = .3
    gts = [' cat', ' cat', 'cat'] + ['dog'] * 7
    assert vqa_accuracy('cat', gts) == pytest.approx(0.9)
    assert vqa_accuracy('cat', gts, legacy=True) == pytest.approx(0.3)


def test_evaluator_legacy_switch():
    ds = _GT({1: (['yes'] * 10, 'yes/no'), 2: (['two'] * 4 + ['three'] * 6, 'number')})
    for legacy, expected in ((False, (0 + 1) / 2), (True, (1 + 0) / 2)):
        ev = build(METRICS, dict(type='VQAAccuracy', legacy=legacy), dataset=ds)
        ev.process({}, [{'question_id': 1, 'answer': 'Yes'}, {'question_id': 2, 'answer': 'two'}])
        assert ev.compute()['accuracy'] == pytest.approx(expected)


def test_per_question_kind_accuracy_equals_a_hand_count(demo_data):
    """question_kinds: by the annotations' question_type and by regexes, against counts made from the raw JSON."""
    import json
    import re as regex

    from attnkit.builder import build_dataset
    from attnkit.errors import ConfigError
    from attnkit.evaluation.vqa import vqa_accuracy

    dataset = build_dataset(dict(type='VQAv2Dataset', questions_file=demo_data['vqa_val_questions'],
                                 annotations_file=demo_data['vqa_val_annotations'], img_dir=demo_data['img_dir'],
                                 img_name_template='{image_id:06d}.jpg', answer_min_count=1))
    with open(demo_data['vqa_val_questions']) as f:
        questions = {q['question_id']: q['question'] for q in json.load(f)['questions']}
    with open(demo_data['vqa_val_annotations']) as f:
        anns = {a['question_id']: a for a in json.load(f)['annotations']}
    # the majority answer on every other question, a wrong answer elsewhere
    qids = sorted(anns)
    preds = [{'question_id': qid, 'answer': anns[qid]['multiple_choice_answer'] if i % 2 == 0 else 'zebra'}
             for i, qid in enumerate(qids)]
    predicted = {p['question_id']: p['answer'] for p in preds}

    def score(qid):  # per question: the official rule (tested on its own above); the grouping is what is new here
        return vqa_accuracy(predicted[qid], [a['answer'] for a in anns[qid]['answers']])

    def hand(kind_of):
        groups = {}
        for qid in qids:
            groups.setdefault(kind_of(qid), []).append(score(qid))
        return {k: (sum(v) / len(v), len(v)) for k, v in groups.items()}

    by_type = VQAAccuracy(dataset, question_kinds='question_type')
    by_type.process({}, preds)
    metrics = by_type.compute()
    expected = hand(lambda qid: anns[qid]['question_type'])
    assert len(expected) >= 4
    for kind, (acc, n) in expected.items():
        assert metrics[f'kind_{kind}'] == pytest.approx(acc) and metrics[f'num_kind_{kind}'] == n

    kinds = {'colour': r'\bcolou?r\b', 'count': r'^how many', 'left/right': r'\b(left|right)\b'}
    by_regex = VQAAccuracy(dataset, question_kinds=kinds)
    by_regex.process({}, preds)
    metrics = by_regex.compute()
    expected = hand(lambda qid: next((k for k, p in kinds.items() if regex.search(p, questions[qid], regex.I)),
                                     'unmatched'))
    assert {k[len('kind_'):] for k in metrics if k.startswith('kind_')} == set(expected)
    for kind, (acc, n) in expected.items():
        assert metrics[f'kind_{kind}'] == pytest.approx(acc) and metrics[f'num_kind_{kind}'] == n
    assert 'question kind' in by_regex.summary() and 'left/right' in by_regex.summary()
    with pytest.raises(ConfigError, match=r"question_kinds\['bad'\] = '\(' is not a regular expression"):
        VQAAccuracy(dataset, question_kinds={'bad': '('})
    with pytest.raises(ConfigError, match='needs the evaluated VQA dataset'):
        VQAAccuracy(None, question_kinds='question_type')
