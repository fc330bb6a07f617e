"""How long the build-time check of listed image files takes (issue 12 target: 118k COCO train images < 10 s).

Writes N empty image files and a COCO annotation file listing them (one box each) into a temporary folder,
then times ``attnkit.data.checks.check_files_exist`` on the N paths and the whole ``CocoDetection`` build
(reading the JSON, the boxes, the existence check), and the error with 1000 files missing.

    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python tools/bench_file_check.py [--num 118287] [--dir /tmp/x]

The files are on the disk of ``--dir`` (default: a new temporary folder, removed at the end); right after they
are written their metadata is in the page cache, as it is for a data set read in the previous epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num', type=int, default=118287, help='listed images (COCO train2017: 118287)')
    parser.add_argument('--dir', help='where to write the files (default: a temporary folder)')
    args = parser.parse_args()

    from attnkit.data.checks import check_files_exist
    from attnkit.errors import DataError
    from attnkit.tasks.detection.datasets.coco import CocoDetection

    root = args.dir or tempfile.mkdtemp(prefix='attnkit_filecheck_')
    img_dir = os.path.join(root, 'train2017')
    os.makedirs(img_dir, exist_ok=True)
    names = [f'{i:012d}.jpg' for i in range(1, args.num + 1)]
    for name in names:
        open(os.path.join(img_dir, name), 'wb').close()
    ann = os.path.join(root, 'instances_train2017.json')
    with open(ann, 'w') as f:
        json.dump({'images': [{'id': i, 'file_name': n, 'width': 640, 'height': 480} for i, n in enumerate(names, 1)],
                   'annotations': [{'id': i, 'image_id': i, 'category_id': 1, 'bbox': [10, 20, 100, 80],
                                    'area': 8000, 'iscrowd': 0} for i in range(1, args.num + 1)],
                   'categories': [{'id': 1, 'name': 'thing'}]}, f)
    paths = [os.path.join(img_dir, n) for n in names]
    try:
        print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.num} files in {img_dir}')
        for run in range(3):
            t = time.perf_counter()
            check_files_exist(paths, source=ann)
            print(f'check_files_exist, run {run}: {time.perf_counter() - t:.2f} s')
        t = time.perf_counter()
        dataset = CocoDetection(ann, img_dir)
        print(f'CocoDetection build ({len(dataset)} images, check included): {time.perf_counter() - t:.2f} s')
        missing = paths[:-1000] + [p + '.missing' for p in paths[-1000:]]
        t = time.perf_counter()
        try:
            check_files_exist(missing, source=ann)
        except DataError as exc:
            print(f'1000 missing: {time.perf_counter() - t:.2f} s; the error ({len(str(exc))} chars): {exc}')
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
