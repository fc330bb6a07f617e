#!/usr/bin/env python
"""`python tools/train.py ...` = `attnkit train ...` (for mmdetection habits)."""
import sys; from attnkit.cli import main  # noqa: E702,E401
sys.exit(main(['train', *sys.argv[1:]]))
