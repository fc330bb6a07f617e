"""The embedded "shapes" demo data set, written in the real COCO, Pascal VOC and VQA v2 formats.

``generate_demo_data()`` draws size x size RGB images with 1-4 shapes (circle, square, triangle, star — the
detection/segmentation classes, in that order) in five colours on muted textured backgrounds, and writes::

    out_dir/
      meta.json                                   classes, colours, generator arguments, counts
      voc/JPEGImages/{id:06d}.jpg                 all images (COCO and VQA read them from here too)
      voc/Annotations/{id:06d}.xml                Pascal VOC boxes (1-based pixel convention)
      voc/SegmentationClass/{id:06d}.png          palette PNG: 0 bg, 1..4 shapes, 255 borders
      voc/ImageSets/{Main,Segmentation}/{train,val}.txt
      coco/annotations/instances_{train,val}.json
      vqa/v2_OpenEnded_mscoco_{train,val}_questions.json, vqa/v2_mscoco_{train,val}_annotations.json
      cls/{train,val}/<shape>/{id:06d}_{k}.jpg    every object cropped from its scene (ImageFolder layout,
                                                  size/2 px: see attnkit.data.demo_classification)

Image ids are 1..num_train (train) then num_train+1..num_train+num_val (val). The output is a pure function
of the arguments: the same seed gives byte-identical files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from collections import Counter

import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError
from .demo_classification import CLS_DIR, write_object_crops
from .demo_formats import coco_annotation, ensure_dirs, label_map, write_json, write_label_png, write_voc_xml
from .demo_scene import CLASSES, COLOURS, render_scene, sample_scene
from .demo_vqa import ANSWER_TYPE, QUESTION_TYPE, QuestionSampler, make_answers

__all__ = ['generate_demo_data', 'demo_paths', 'main', 'CLASSES', 'COLOURS', 'GENERATOR_VERSION']

GENERATOR_VERSION = 3  # 3: the classification split cls/ (2: 8-12 VQA questions per image; 1: 3-5)
DEFAULT_NUM_TRAIN = 1000
DEFAULT_NUM_VAL = 200
_MIN_VISIBLE_PIXELS = 6
_MIN_VISIBLE_FRACTION = 0.6  # an object keeps at least 60 % of its pixels visible, so it stays recognisable


def demo_paths(out_dir: str | os.PathLike) -> dict[str, str]:
    """The paths of a demo data set rooted at ``out_dir`` (whether or not it exists yet)."""
    root = os.path.abspath(os.fspath(out_dir))
    voc, coco, vqa, cls = (os.path.join(root, d) for d in ('voc', 'coco', 'vqa', CLS_DIR))
    paths = {
        'root': root, 'meta': os.path.join(root, 'meta.json'),
        'voc_root': voc, 'img_dir': os.path.join(voc, 'JPEGImages'),
        'ann_dir': os.path.join(voc, 'Annotations'), 'seg_dir': os.path.join(voc, 'SegmentationClass'),
        'coco_root': coco,
        'vqa_root': vqa, 'cls_root': cls,
    }
    for split in ('train', 'val'):
        paths[f'voc_{split}_list'] = os.path.join(voc, 'ImageSets', 'Main', f'{split}.txt')
        paths[f'voc_seg_{split}_list'] = os.path.join(voc, 'ImageSets', 'Segmentation', f'{split}.txt')
        paths[f'coco_{split}_json'] = os.path.join(coco, 'annotations', f'instances_{split}.json')
        paths[f'vqa_{split}_questions'] = os.path.join(vqa, f'v2_OpenEnded_mscoco_{split}_questions.json')
        paths[f'vqa_{split}_annotations'] = os.path.join(vqa, f'v2_mscoco_{split}_annotations.json')
        paths[f'cls_{split}_dir'] = os.path.join(cls, split)
    return paths


def _draw_image(seed: int, image_id: int, size: int):
    """Sample and render one scene; resample (deterministically) if an object is mostly hidden or tiny."""
    for attempt in range(100):
        rng = np.random.default_rng([seed, image_id, attempt])
        scene = sample_scene(rng, size)
        image, instances = render_scene(scene, rng)
        if all(o.mask.sum() >= max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * o.drawn_pixels)
               for o in scene.objects):
            return scene, image, instances
    raise RuntimeError(f'could not draw image {image_id} with visible objects')  # pragma: no cover


def _write_split(paths: dict[str, str], split: str, ids: list[int], seed: int, size: int,
                 ann_id_start: int) -> tuple[dict, int]:
    """Write images, VOC files, and return the COCO/VQA content of one split."""
    sampler = QuestionSampler()
    images, annotations, questions, vqa_anns = [], [], [], []
    ann_id = ann_id_start
    crops: Counter = Counter()
    for image_id in ids:
        name = f'{image_id:06d}'
        scene, image, instances = _draw_image(seed, image_id, size)
        Image.fromarray(image).save(os.path.join(paths['img_dir'], name + '.jpg'), format='JPEG', quality=95,
                                    subsampling=0)
        write_label_png(os.path.join(paths['seg_dir'], name + '.png'), label_map(instances, scene.objects))
        write_voc_xml(os.path.join(paths['ann_dir'], name + '.xml'), name + '.jpg', size, scene.objects)
        crops += write_object_crops(paths[f'cls_{split}_dir'], image_id, image, scene.objects, size)
        images.append({'id': image_id, 'file_name': name + '.jpg', 'width': size, 'height': size})
        for obj in scene.objects:
            annotations.append(coco_annotation(obj, ann_id, image_id))
            ann_id += 1
        qrng = np.random.default_rng([seed, image_id, 1_000_003])
        for k, (kind, question, answer) in enumerate(sampler.sample(scene.objects, qrng)):
            qid = image_id * 1000 + k
            questions.append({'image_id': image_id, 'question': question[0].upper() + question[1:],
                              'question_id': qid})
            vqa_anns.append({'question_id': qid, 'image_id': image_id, 'question_type': QUESTION_TYPE[kind],
                             'answer_type': ANSWER_TYPE[kind], 'multiple_choice_answer': answer,
                             'answers': make_answers(kind, answer, qrng)})
    for key in (f'voc_{split}_list', f'voc_seg_{split}_list'):
        with open(paths[key], 'w') as f:
            f.write(''.join(f'{i:06d}\n' for i in ids))
    info = {'description': 'attnkit shapes demo data', 'version': str(GENERATOR_VERSION), 'year': 2026,
            'contributor': 'attnkit.data.demo', 'date_created': '2026-01-01'}
    licenses = [{'id': 1, 'name': 'CC0 1.0', 'url': 'https://creativecommons.org/publicdomain/zero/1.0/'}]
    write_json(paths[f'coco_{split}_json'], {
        'info': info, 'licenses': licenses, 'images': images, 'annotations': annotations,
        'categories': [{'id': i + 1, 'name': c, 'supercategory': 'shape'} for i, c in enumerate(CLASSES)]})
    write_json(paths[f'vqa_{split}_questions'], {
        'info': info, 'task_type': 'Open-Ended', 'data_type': 'mscoco', 'license': licenses[0],
        'data_subtype': split, 'questions': questions})
    write_json(paths[f'vqa_{split}_annotations'], {
        'info': info, 'license': licenses[0], 'data_type': 'mscoco', 'data_subtype': split,
        'annotations': vqa_anns})
    counts = {'images': len(images), 'objects': len(annotations), 'questions': len(questions),
              'objects_per_class': {c: sum(a['category_id'] == i + 1 for a in annotations)
                                    for i, c in enumerate(CLASSES)},
              'answer_types': dict(sorted(Counter(a['answer_type'] for a in vqa_anns).items())),
              'crops_per_class': {c: crops[c] for c in CLASSES}}
    return counts, ann_id


_GENERATOR_MODULES = ('demo.py', 'demo_scene.py', 'demo_vqa.py', 'demo_formats.py', 'palette.py',
                      'demo_classification.py')


def generator_fingerprint() -> str:
    """sha256 (16 hex digits) of the generator's source files: a data set written by other code is rewritten,
    even when nobody remembered to bump ``GENERATOR_VERSION``."""
    digest = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in _GENERATOR_MODULES:
        with open(os.path.join(here, name), 'rb') as f:
            digest.update(name.encode() + b'\0' + f.read())
    return digest.hexdigest()[:16]


def _matches(meta_path: str, args: dict) -> bool:
    try:
        with open(meta_path, encoding='utf-8') as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return (meta.get('generator_version') == GENERATOR_VERSION and meta.get('args') == args
            and meta.get('generator_fingerprint') == generator_fingerprint())


def generate_demo_data(out_dir: str | os.PathLike = 'data/demo', num_train: int = DEFAULT_NUM_TRAIN,
                       num_val: int = DEFAULT_NUM_VAL, size: int = 128, seed: int = 0,
                       force: bool = False) -> dict[str, str]:
    """Generate (or reuse) the shapes demo data set under ``out_dir``.

    Args:
        out_dir: destination folder; it must be absent, empty, or an earlier demo data set.
        num_train: training images (ids 1..num_train).
        num_val: validation images (ids num_train+1..num_train+num_val).
        size: image side in pixels (images are size x size RGB, JPEG quality 95).
        seed: random seed; the same arguments give byte-identical files.
        force: regenerate even when ``out_dir/meta.json`` records the same arguments and generator (version and
            source fingerprint); without it, a data set from other arguments or other generator code is rewritten.

    Returns:
        Paths: ``root``, ``meta``, ``voc_root``, ``img_dir``, ``ann_dir``, ``seg_dir``, ``coco_root``,
        ``vqa_root``, ``cls_root``, and per split (train, val) ``voc_{split}_list``, ``voc_seg_{split}_list``,
        ``coco_{split}_json``, ``vqa_{split}_questions``, ``vqa_{split}_annotations``, ``cls_{split}_dir`` (the
        ImageFolder of the split's object crops).

    The data set is written to a temporary sibling folder and moved into place when complete (``meta.json``
    last), so an interrupted run never leaves a folder that looks finished. Rewriting an earlier data set
    replaces and removes only the files that generator wrote (listed in its ``meta.json``): other files in
    ``out_dir`` stay.

    Raises:
        DataError: ``out_dir`` holds other files and no ``meta.json``, or a ``meta.json`` that does not say
            which files the generator wrote.
    """
    for name, val, low in (('num_train', num_train, 1), ('num_val', num_val, 1), ('size', size, 32),
                           ('seed', seed, 0)):
        if not isinstance(val, int) or isinstance(val, bool) or val < low:
            raise ConfigError(f'generate_demo_data: {name} must be an integer >= {low}, got {val!r}.')
    if num_train + num_val >= 1_000_000:
        raise ConfigError('generate_demo_data: at most 999999 images (ids are written as 6 digits).')
    paths = demo_paths(out_dir)
    root = paths['root']
    args = {'num_train': num_train, 'num_val': num_val, 'size': size, 'seed': seed}
    if not force and _matches(paths['meta'], args):
        return paths
    if os.path.exists(root) and not (os.path.isdir(root) and (not os.listdir(root)
                                                              or os.path.isfile(paths['meta']))):
        raise DataError(f"Demo data folder {root!r} exists and is not a demo data set (no meta.json); "
                        'refusing to overwrite it. Choose another out_dir or remove it.')
    old_files = _written_files(paths['meta']) if os.path.isfile(paths['meta']) else None
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp_root = os.path.join(parent, f'.{os.path.basename(root)}.tmp-{os.getpid()}')
    shutil.rmtree(tmp_root, ignore_errors=True)
    tmp = demo_paths(tmp_root)
    try:
        ensure_dirs(tmp['img_dir'], tmp['ann_dir'], tmp['seg_dir'], os.path.dirname(tmp['voc_train_list']),
                    os.path.dirname(tmp['voc_seg_train_list']), os.path.dirname(tmp['coco_train_json']),
                    tmp['vqa_root'])
        train_counts, next_ann = _write_split(tmp, 'train', list(range(1, num_train + 1)), seed, size, 1)
        val_counts, _ = _write_split(tmp, 'val', list(range(num_train + 1, num_train + num_val + 1)), seed,
                                     size, next_ann)
        meta = {'generator': 'attnkit.data.demo', 'generator_version': GENERATOR_VERSION,
                'generator_fingerprint': generator_fingerprint(), 'args': args,
                'classes': list(CLASSES), 'colours': list(COLOURS),
                'category_ids': {c: i + 1 for i, c in enumerate(CLASSES)},
                'image_ids': {'train': [1, num_train], 'val': [num_train + 1, num_train + num_val]},
                'counts': {'train': train_counts, 'val': val_counts},
                'files': _list_files(tmp_root)}  # what this generator wrote: the only files a rerun removes
        write_json(tmp['meta'], meta)  # written last: its presence marks a complete data set
        if old_files is None:  # absent or empty folder: rename the finished data set into place
            try:
                os.replace(tmp_root, root)
            except OSError:
                # another process (e.g. a second rank) finished the same data set first: keep theirs
                if not _matches(paths['meta'], args):
                    raise
        else:
            _replace_files(tmp_root, root, old_files, meta['files'])
        shutil.rmtree(tmp_root, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    return paths


def _list_files(root: str) -> list[str]:
    """The files under ``root`` as sorted '/'-separated relative paths, ``meta.json`` excluded."""
    out = []
    for dirpath, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, n), root).replace(os.sep, '/') for n in names]
    return sorted(f for f in out if f != 'meta.json')


def _layout_files(num_train: int, num_val: int) -> list[str]:
    """The files a generator without a ``files`` list in ``meta.json`` wrote for these counts."""
    files = []
    for i in range(1, num_train + num_val + 1):
        files += [f'voc/JPEGImages/{i:06d}.jpg', f'voc/Annotations/{i:06d}.xml', f'voc/SegmentationClass/{i:06d}.png']
    for split in ('train', 'val'):
        files += [f'voc/ImageSets/Main/{split}.txt', f'voc/ImageSets/Segmentation/{split}.txt',
                  f'coco/annotations/instances_{split}.json', f'vqa/v2_OpenEnded_mscoco_{split}_questions.json',
                  f'vqa/v2_mscoco_{split}_annotations.json']
    return sorted(files)


def _written_files(meta_path: str) -> list[str]:
    """The files the generator of an existing data set wrote (relative paths), from its ``meta.json``."""
    try:
        with open(meta_path, encoding='utf-8') as f:
            meta = json.load(f)
        generator = meta.get('generator')
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"Demo data folder {os.path.dirname(meta_path)!r}: {meta_path!r} cannot be read "
                        f'({type(exc).__name__}: {exc}); refusing to delete anything.') from exc
    if generator != 'attnkit.data.demo':
        raise DataError(f"Demo data folder {os.path.dirname(meta_path)!r} has a meta.json that attnkit's demo "
                        'generator did not write; refusing to overwrite it. Choose another out_dir.')
    try:
        if isinstance(meta.get('files'), list):
            files = [str(p) for p in meta['files']]
        else:  # written before meta.json listed its files: the fixed layout of its counts
            files = _layout_files(int(meta['args']['num_train']), int(meta['args']['num_val']))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DataError(f"Demo data folder {os.path.dirname(meta_path)!r}: {meta_path!r} does not say which files "
                        f'the generator wrote ({type(exc).__name__}: {exc}); refusing to delete anything. '
                        'Choose another out_dir or remove it.') from exc
    for p in files:
        if os.path.isabs(p) or '..' in p.split('/'):
            raise DataError(f"Demo data folder {os.path.dirname(meta_path)!r}: {meta_path!r} lists {p!r}, which "
                            'is not a file inside the folder; refusing to delete anything.')
    return files


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:  # another rank rewriting the same data set removed it first
        pass


def _replace_files(src_root: str, root: str, old_files: list[str], new_files: list[str]) -> None:
    """Move ``new_files`` from ``src_root`` into ``root``, then delete ``old_files`` not rewritten (and folders
    left empty by that); ``meta.json`` goes first and comes back last. Other files in ``root`` are not touched."""
    meta = os.path.join(root, 'meta.json')
    ours = set(old_files) | {'meta.json'}
    clash = [rel for rel in new_files if rel not in ours and os.path.lexists(os.path.join(root, *rel.split('/')))]
    if clash:  # a file the old data set did not write sits where the new one writes: the user's, keep it
        more = f' and {len(clash) - 1} more' if len(clash) > 1 else ''
        raise DataError(f'Demo data folder {root!r}: {clash[0]!r}{more} would be overwritten but was not written by '
                        'the demo generator; move it, or give another --out.')
    _remove(meta)  # the folder no longer looks finished until the new meta.json is in place
    for rel in new_files:
        dst = os.path.join(root, *rel.split('/'))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(os.path.join(src_root, *rel.split('/')), dst)
    keep = set(new_files)
    folders = set()
    for rel in old_files:
        if rel in keep:
            continue
        path = os.path.join(root, *rel.split('/'))
        if os.path.isfile(path) or os.path.islink(path):
            _remove(path)
        parts = rel.split('/')[:-1]
        folders.update('/'.join(parts[:k]) for k in range(1, len(parts) + 1))
    for rel in sorted(folders, key=len, reverse=True):
        try:
            os.rmdir(os.path.join(root, *rel.split('/')))  # only when empty: a user's file keeps its folder
        except OSError:
            pass
    os.replace(os.path.join(src_root, 'meta.json'), meta)


def main(argv: list[str] | None = None) -> int:
    """``attnkit data demo [--out-dir D] [--num-train N] [--num-val N] [--size S] [--seed S] [--force]``."""
    parser = argparse.ArgumentParser(prog='attnkit data demo',
                                     description='Generate the shapes demo data (COCO, VOC, VQA v2 formats and an ImageFolder classification split).')
    parser.add_argument('--out-dir', default='data/demo')
    parser.add_argument('--num-train', type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument('--num-val', type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true', help='regenerate even if the data set is up to date')
    ns = parser.parse_args(argv)
    start = time.perf_counter()
    paths = generate_demo_data(ns.out_dir, num_train=ns.num_train, num_val=ns.num_val, size=ns.size,
                               seed=ns.seed, force=ns.force)
    with open(paths['meta'], encoding='utf-8') as f:
        counts = json.load(f)['counts']
    print(f"demo data in {paths['root']} ({time.perf_counter() - start:.1f} s): "
          f"{counts['train']['images']} train / {counts['val']['images']} val images, "
          f"{counts['train']['questions']} / {counts['val']['questions']} questions")
    for key in sorted(paths):
        print(f'  {key}: {paths[key]}')
    return 0


if __name__ == '__main__':  # pragma: no cover
    raise SystemExit(main())
