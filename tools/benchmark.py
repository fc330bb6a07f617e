#!/usr/bin/env python
"""Run a benchmark: ``python tools/benchmark.py KIND [options]`` (same as ``attnkit bench KIND``).

KIND is a module of ``attnkit.benchmarks``: attention, detection, segmentation, vqa, engine.
"""
import importlib
import os
import sys

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

if __name__ == '__main__':
    if len(sys.argv) < 2 or sys.argv[1] in ('-h', '--help'):
        print(__doc__)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    module = importlib.import_module(f'attnkit.benchmarks.{sys.argv[1]}')
    sys.exit(module.main(sys.argv[2:]))
