#!/usr/bin/env python
"""`python tools/test.py ...` = `attnkit test ...` (for mmdetection habits)."""
import sys; from attnkit.cli import main  # noqa: E702,E401
sys.exit(main(['test', *sys.argv[1:]]))
