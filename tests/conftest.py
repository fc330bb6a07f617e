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
