"""tools/gpu_check.py end to end on the CPU (``--device cpu --tiny``): every task, the torchvision references,
the SDPA backend table and the markdown report."""
from __future__ import annotations

import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tools'))

import gpu_check  # noqa: E402


def test_gpu_check_tiny_on_the_cpu(tmp_path, capsys):
    """The script's main() in this process (what ``python tools/gpu_check.py ...`` runs, without ~7 s of imports)."""
    out = tmp_path / 'report.md'
    capsys.readouterr()
    code = gpu_check.main(['--device', 'cpu', '--tiny', '--out', str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stdout + stderr
    text = out.read_text()
    assert text == stdout  # the same report on stdout and in --out
    rows = [line for line in text.splitlines() if line.startswith('| ')]
    for model in ('attnkit FCOS', 'torchvision FCOS', 'attnkit FCN', 'attnkit DANet', 'torchvision FCN',
                  'attnkit MCAN'):
        row = next(r for r in rows if f'| {model}' in r)
        cells = [c.strip() for c in row.split('|')]
        assert float(cells[5]) > 0 and float(cells[6]) > 0, row  # train step and inference times
    assert any('x (torchvision FCOS' in r for r in rows) and any('x (torchvision FCN' in r for r in rows)
    # DANet's position and channel attention go through SDPA; on the CPU both must get the flash kernel
    for kind in ('PositionAttention', 'ChannelAttention'):
        row = next(r for r in rows if f'| {kind} ' in r)
        assert '**flash**' in row and row.rstrip(' |').endswith('ok'), row
    assert any('| MultiHeadAttention ' in r for r in rows)  # MCAN's attention calls are recorded too
    assert text.rstrip().endswith('every check passed')


def test_sdpa_probe_flags_the_math_kernel_at_real_sizes():
    """A call that only the math kernel runs (dropout on the CPU) is reported as FAIL unless --tiny."""
    from attnkit.heads.vqa.mcan import MultiHeadAttention
    model = MultiHeadAttention(16, 2, dropout=0.5)
    x = torch.randn(2, 5, 16)
    contender = gpu_check.Contender('t', 'mha', model, x, x, lambda m, b: m(b, b).sum(), lambda m, b: m(b, b),
                                    '5', 2, True)
    strict = gpu_check.probe_sdpa(contender, torch.device('cpu'), False, strict=True)
    assert strict and strict[0]['default'] == 'math' and strict[0]['status'] == 'FAIL'
    assert strict[0]['forced']['math'] and not strict[0]['forced']['flash']
    lenient = gpu_check.probe_sdpa(contender, torch.device('cpu'), False, strict=False)
    assert lenient[0]['status'].startswith('math (not checked')
