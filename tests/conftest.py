import os

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import torch  # noqa: E402

# Test models are tiny: one thread is as fast, and avoids OpenMP spin-waits when the machine is busy
# (measured 5-20x slower steps with 2 threads on an oversubscribed 2-core box).
torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The shapes demo data set (12 train / 6 val images of 64 px, seed 0) in COCO, VOC and VQA v2 formats, and its
    classification split (every object cropped to 32 px, ImageFolder layout: ~33 train / ~17 val crops).

    Returns the paths dict of ``attnkit.data.demo.generate_demo_data`` (root, voc_root, img_dir, seg_dir,
    ann_dir, coco_{train,val}_json, vqa_{train,val}_{questions,annotations}, voc_{train,val}_list,
    cls_{train,val}_dir, ...).
    Treat it as read-only: it is shared by the whole test session.
    """
    from attnkit.data.demo import generate_demo_data
    return generate_demo_data(str(tmp_path_factory.mktemp('demo_data') / 'demo'), num_train=12, num_val=6,
                              size=64, seed=0)


def _vqa_accuracy_by_hand(model, dataset, annotations_file: str, batch_size: int = 16) -> tuple[float, int]:
    """(official VQA accuracy, number of questions) of ``model``'s answer to every question of ``dataset``, scored
    against the raw annotations file: the reference a trained VQA model's evaluator figure is compared with."""
    import json

    import torch

    from attnkit.evaluation.vqa import vqa_accuracy
    model.eval()
    answers = {}
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = dataset.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            answers.update({p['question_id']: p['answer'] for p in model(batch)})
    with open(annotations_file) as f:
        truth = {a['question_id']: [x['answer'] for x in a['answers']] for a in json.load(f)['annotations']}
    assert len(answers) == len(truth)
    return sum(vqa_accuracy(answers[q], truth[q]) for q in truth) / len(truth), len(truth)


@pytest.fixture
def vqa_accuracy_by_hand():
    """:func:`_vqa_accuracy_by_hand` for tests that train a VQA model."""
    return _vqa_accuracy_by_hand


@pytest.fixture
def run_cli(capsys):
    """``run_cli('test', cfg, ckpt, ...)``: ``attnkit ARGV`` in this process -> (exit code, stdout, stderr)."""
    from attnkit import cli

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run
