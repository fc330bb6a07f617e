#!/usr/bin/env python
"""`python tools/infer.py ...` = `attnkit infer ...` (for mmdetection habits)."""
import sys; from attnkit.cli import main  # noqa: E702,E401
sys.exit(main(['infer', *sys.argv[1:]]))
