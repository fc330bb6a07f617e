"""``make test-browser``: open the report of a tiny trained model in a real headless browser and check what it shows.

Steps: train a tiny segmentor (DANet, 8-channel ResNet-18) for 4 iterations on a 12/6-image, 64-px shapes demo set,
write its report (``attnkit report``), render it with Debian's ``chromium --headless`` twice: ``--dump-dom`` (the
DOM after the page's load event) and ``--screenshot``. Checks:

- the report's inline script ran and found no broken image: ``<body data-images-checked="yes"
  data-images-broken="0">`` and ``data-images-total`` equals the number of ``<img>`` in the file;
- the curves (losses, learning rate, metrics), the metric and per-class tables, the best/worst gallery and the config
  are in the rendered DOM;
- the screenshot is a PNG of the window's size that is not blank (many colours, not one flat colour).

Chromium: used when on PATH (``chromium``, ``chromium-browser``, ``google-chrome``). When missing, it is installed
with ``apt-get update && apt-get install -y chromium`` if this runs as root and apt-get exists. When it cannot be
had (not root, no apt-get, or apt cannot reach its mirrors) the script prints one line starting with
``test-browser: SKIPPED`` saying why and exits 0, so a machine without a browser and without the means to install one
does not fail CI; set ``ATTNKIT_REQUIRE_BROWSER=1`` to make that a failure (exit 1). Any failed check exits 1.
Runs in about a minute on 2 CPU cores (training and the report take most of it).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')
WINDOW = (1280, 2400)


def log(msg: str) -> None:
    print(f'test-browser: {msg}', flush=True)


def skip(reason: str) -> int:
    """Exit code when no browser can be had: 0 (skip), or 1 under ATTNKIT_REQUIRE_BROWSER=1."""
    if os.environ.get('ATTNKIT_REQUIRE_BROWSER', '') not in ('', '0'):
        log(f'FAILED: {reason} (ATTNKIT_REQUIRE_BROWSER is set)')
        return 1
    log(f'SKIPPED: {reason}; the report was not checked in a browser (set ATTNKIT_REQUIRE_BROWSER=1 to fail instead)')
    return 0


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_browser() -> tuple[str | None, str]:
    """(path, '') after installing Debian's chromium, or (None, why it could not be installed)."""
    if shutil.which('apt-get') is None:
        return None, 'chromium is not installed and this machine has no apt-get to install it'
    if hasattr(os, 'geteuid') and os.geteuid() != 0:
        return None, 'chromium is not installed and installing it needs root (sudo apt-get install -y chromium)'
    log('chromium is missing: apt-get update && apt-get install -y chromium (about a minute)')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    for cmd in (['apt-get', 'update', '-q'], ['apt-get', 'install', '-y', '-q', '--no-install-recommends', 'chromium']):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return None, f"{' '.join(cmd)} did not finish in 15 minutes"
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ['']
            return None, f"{' '.join(cmd)} failed (offline?): {last[0][:200]}"
    path = find_browser()
    return (path, '') if path else (None, 'apt-get installed chromium but no chromium binary is on PATH')


def train_and_report(tmp: str) -> str:
    """Train the tiny segmentor in ``tmp`` and write its report; returns the HTML path."""
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
    import torch
    torch.set_num_threads(1)
    from attnkit.config import load_config
    from attnkit.data.demo import generate_demo_data
    from attnkit.engine import Trainer
    from attnkit.report import write_report
    paths = generate_demo_data(os.path.join(tmp, 'demo'), num_train=12, num_val=6, size=64, seed=0)
    voc = paths['voc_root']
    cfg = load_config(os.path.join(ROOT, 'configs/demo/danet_r18-d8_shapes.py'), {
        'data.train.dataset.root': voc, 'data.val.dataset.root': voc,
        'data.train.batch_size': 4, 'data.val.batch_size': 6,
        'model.backbone.base_channels': 8, 'model.decode_head.channels': 16,
        'schedule.max_iters': 4, 'schedule.warmup_iters': 0,
        'train_cfg.eval_interval': 2, 'train_cfg.checkpoint_interval': 2,
        'runtime.log_interval': 1, 'runtime.tensorboard': False, 'runtime.report': False})
    cfg.data.train.dataset.pipeline = [dict(type='RandomCropCatMax', height=64, width=64)]
    work = os.path.join(tmp, 'work')
    Trainer(cfg, work_dir=work).train()
    return write_report(work, os.path.join(tmp, 'report.html'), gallery_images=6, show=2, attention_images=1)


class _Count(HTMLParser):
    """Counts of tags, ids and classes in an HTML text."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs = 0
        self.broken: list[str] = []
        self.ids: set[str] = set()
        self.classes: list[str] = []
        self.body: dict[str, str] = {}
        self.rows: dict[str, int] = {}
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or '' for k, v in attrs}
        if tag == 'img':
            self.imgs += 1
            if 'data-broken' in a:
                self.broken.append(a.get('alt') or a.get('id') or '?')
        if tag == 'body':
            self.body = a
        if tag == 'table':
            self._table = a.get('id', '')
        if tag == 'tr' and self._table:
            self.rows[self._table] = self.rows.get(self._table, 0) + 1
        if 'id' in a:
            self.ids.add(a['id'])
        self.classes += a.get('class', '').split()

    def handle_endtag(self, tag: str) -> None:
        if tag == 'table':
            self._table = None


def chromium(browser: str, args: list[str], profile: str) -> subprocess.CompletedProcess:
    cmd = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
           '--hide-scrollbars', f'--user-data-dir={profile}', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def check(browser: str, report: str, tmp: str) -> list[str]:
    """Render ``report``; return the failed checks (empty: all passed)."""
    failures = []
    with open(report, encoding='utf-8') as f:
        source = _Count()
        source.feed(f.read())
    url = 'file://' + os.path.abspath(report)
    proc = chromium(browser, ['--virtual-time-budget=10000', '--dump-dom', url], os.path.join(tmp, 'profile1'))
    if proc.returncode != 0 or '<body' not in proc.stdout:
        return [f'chromium --dump-dom failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}']
    dom = _Count()
    dom.feed(proc.stdout)
    body = dom.body
    if body.get('data-images-checked') != 'yes':
        failures.append("the report's image check did not run (no data-images-checked on <body>)")
    if body.get('data-images-broken') != '0':
        failures.append(f"{body.get('data-images-broken')} image(s) did not render (naturalWidth 0): "
                        f'{dom.broken[:5]}')
    if body.get('data-images-total') != str(source.imgs) or source.imgs == 0:
        failures.append(f"the browser saw {body.get('data-images-total')} images, the file has {source.imgs}")
    for ident in ('curve-losses', 'curve-lr', 'curve-metrics', 'final-metrics', 'per-class-table', 'config-text',
                  'gallery-best', 'gallery-worst'):
        if ident not in dom.ids:
            failures.append(f'#{ident} is missing from the rendered page')
    if dom.rows.get('final-metrics', 0) < 2 or dom.rows.get('per-class-table', 0) < 2:
        failures.append(f'the metric tables are empty (rows: {dom.rows})')
    if dom.classes.count('prediction') < 2:
        failures.append(f"the prediction gallery has {dom.classes.count('prediction')} pictures (expected >= 2)")
    failures += check_detects_broken(browser, report, tmp)
    shot = os.path.join(tmp, 'screenshot.png')
    proc = chromium(browser, [f'--window-size={WINDOW[0]},{WINDOW[1]}', f'--screenshot={shot}', url],
                    os.path.join(tmp, 'profile2'))
    if not os.path.isfile(shot):
        return failures + [f'chromium --screenshot wrote nothing (exit {proc.returncode}): {proc.stderr.strip()[-300:]}']
    import numpy as np
    from PIL import Image
    img = np.asarray(Image.open(shot).convert('RGB'))
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    if img.shape[:2] != (WINDOW[1], WINDOW[0]):
        failures.append(f'the screenshot is {img.shape[1]}x{img.shape[0]}, not the {WINDOW[0]}x{WINDOW[1]} window')
    non_white = float((img.min(-1) < 240).mean())
    if colours < 64 or img.std() < 10 or non_white < 0.02:
        failures.append(f'the screenshot looks blank: {colours} colours, std {img.std():.1f}, '
                        f'{100 * non_white:.1f}% non-white pixels')
    else:
        log(f'screenshot {shot}: {colours} colours, {100 * non_white:.1f}% non-white pixels')
    return failures


def check_detects_broken(browser: str, report: str, tmp: str) -> list[str]:
    """The check itself: a copy of the report whose first image is corrupt must be reported as one broken image."""
    with open(report, encoding='utf-8') as f:
        text = f.read()
    start = text.index('data:image/png;base64,') + len('data:image/png;base64,')
    broken = os.path.join(tmp, 'broken.html')
    with open(broken, 'w', encoding='utf-8') as f:
        f.write(text[:start] + 'bm90IGEgcG5n' + text[text.index('"', start):])  # base64 of 'not a png'
    proc = chromium(browser, ['--virtual-time-budget=10000', '--dump-dom', 'file://' + broken],
                    os.path.join(tmp, 'profile3'))
    dom = _Count()
    dom.feed(proc.stdout)
    if dom.body.get('data-images-broken') != '1':
        return [f"a report with one corrupt image gave data-images-broken={dom.body.get('data-images-broken')!r}, "
                "not '1': the broken-image check does not work"]
    return []


def main() -> int:
    start = time.time()
    browser = find_browser()
    if browser is None:
        browser, why = install_browser()
        if browser is None:
            return skip(why)
    version = subprocess.run([browser, '--version'], capture_output=True, text=True, timeout=60).stdout.strip()
    log(f'browser {browser} ({version or "version unknown"})')
    keep = os.environ.get('ATTNKIT_BROWSER_KEEP')  # a folder to keep the report and screenshot in
    tmp = keep or tempfile.mkdtemp(prefix='attnkit-browser-')
    os.makedirs(tmp, exist_ok=True)
    try:
        report = train_and_report(tmp)
        log(f'report {report} ({os.path.getsize(report) // 1024} KiB) written in {time.time() - start:.0f} s')
        failures = check(browser, report, tmp)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for failure in failures:
        log(f'FAILED: {failure}')
    if failures:
        return 1
    log(f'passed: the report renders in {os.path.basename(browser)} with every image, curve and table '
        f'({time.time() - start:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    sys.exit(main())
