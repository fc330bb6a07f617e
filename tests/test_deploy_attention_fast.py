"""Inference forms of the attention modules (attnkit.deploy.attention_fast) and their swap in prepare_fast."""
from __future__ import annotations

import copy

import pytest
import torch

from attnkit.attention import attachments, reattach
from attnkit.attention.base import AttentionModule
from attnkit.attention.insert import _WithAttention
from attnkit.builder import build_attention, build_backbone
from attnkit.deploy import prepare_fast, swap_inference_forms
from attnkit.deploy.attention_fast import InferenceGate, inference_form
from attnkit.errors import ConfigError

from _norms import randomise_norms

# (registered type, extra module options): every module with an inference form, both parameter layouts and
# both GC fusions
SPECS = [('cbam', {}), ('cbam', {'layout': 'timm'}), ('se', {}), ('se', {'layout': 'timm'}), ('eca', {}),
         ('gc', {}), ('gc', {'fusion': ('scale', 'add')}), ('gc', {'fusion': 'scale'}), ('coord', {})]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1.0)).item()


@pytest.mark.parametrize('for_compiler', [False, True], ids=['eager-form', 'compiler-form'])
@pytest.mark.parametrize('gamma', [True, False], ids=['gamma', 'no-gamma'])
@pytest.mark.parametrize('fmt', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'nhwc'])
def test_every_inference_form_computes_its_module(gamma, fmt, for_compiler):
    """Module alone, N=2, H != W: same values (1e-5), same shape and memory format as the eager module; also
    the formulations written for torch.compile (``for_compiler``, run eagerly here)."""
    for i, (kind, opts) in enumerate(SPECS):
        torch.manual_seed(i)
        module = build_attention(dict(type=kind, **opts), 24, identity_init=gamma).eval()
        randomise_norms(module, i, gammas=True)
        x = (torch.randn(2, 24, 7, 10) * 3).contiguous(memory_format=fmt)
        form = inference_form(module)
        form.for_compiler = for_compiler
        assert isinstance(form, InferenceGate) and form.source_type == kind
        assert f'gamma={"none" if not gamma else format(float(module.gamma.detach()), ".4g")}' in repr(form)
        with torch.no_grad():
            expected, got = module(x), form(x)
        assert got.shape == expected.shape and _rel(expected, got) <= 1e-5, (kind, opts, _rel(expected, got))
        assert got.is_contiguous(memory_format=fmt), (kind, opts)
    # no form for modules without one, nor for a patched instance
    assert inference_form(build_attention(dict(type='simam'), 8)) is None
    patched = build_attention(dict(type='se'), 8)
    patched.attend = lambda x: x
    assert inference_form(patched) is None


@pytest.mark.parametrize('position', ['after_conv3', 'after_block'])
@pytest.mark.parametrize('kind', ['cbam', 'se', 'gc', 'eca', 'coord'])
def test_fast_path_equals_eager_on_attention_backbones(kind, position):
    """A ResNet with attention in layers 2-4 (attached by insert()): prepare_fast swaps every module for its
    inference form, keeps it attached, reports it, and the stage outputs equal eager within 1e-5. The forms run
    in place (after a folded norm / after the block): the channel gates always, cbam and coord without gamma."""
    torch.manual_seed(0)
    model = build_backbone(dict(type='ResNet', depth=18, base_channels=8, attention=dict(type=kind, position=position),
                                identity_init=True)).eval()
    randomise_norms(model, gammas=True)
    names = [a.module_name for a in attachments(model)]
    assert len(names) == 6
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = model(x)
    # the attachment machinery, without the fused residual tails (tested below)
    fast, report = prepare_fast(copy.deepcopy(model), bf16=False, fuse_residual=False)
    got = fast(x)
    assert report.attention_forms == {n: kind for n in names} and report.attention_mode == 'fast'
    assert f'6 attention modules in inference form ({kind} 6)' in report.summary()
    assert report.fold.kept_attention == names  # trained gammas: nothing folded away
    assert [(a.module_name, a.attention) for a in attachments(fast)] == [(n, fast.get_submodule(n)) for n in names]
    assert all(isinstance(a.attention, InferenceGate) for a in attachments(fast)) and reattach(fast) == 0
    runs = [m for holder in fast.modules() if isinstance(holder, _WithAttention) for m in holder._attnkit_after]
    assert len(runs) == 6 and all(isinstance(m, InferenceGate) for m in runs)
    assert not any(isinstance(m, AttentionModule) for m in fast.modules())
    for a, b in zip(expected, got):
        assert a.shape == b.shape and _rel(a, b) <= 1e-5, (kind, _rel(a, b))
        assert b.is_contiguous(memory_format=torch.channels_last)
    assert report.inplace_forms == ([] if kind in ('cbam', 'coord') else names)
    # without gamma (no identity init) every form runs in place, and still equals eager
    torch.manual_seed(0)
    plain = build_backbone(dict(type='ResNet', depth=18, base_channels=8, attention=dict(type=kind, position=position))).eval()
    randomise_norms(plain)
    with torch.no_grad():
        expected = plain(x)
    fast, report = prepare_fast(copy.deepcopy(plain), bf16=False, fuse_residual=False)
    assert report.inplace_forms == names and '6 in place' in report.summary()
    assert all(m.inplace for m in fast.modules() if isinstance(m, InferenceGate))
    for a, b in zip(expected, fast(x)):
        assert _rel(a, b) <= 1e-5, (kind, _rel(a, b))


@pytest.mark.parametrize('gamma', [True, False], ids=['gamma', 'no-gamma'])
@pytest.mark.parametrize('fmt', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'nhwc'])
def test_every_residual_tail_computes_relu_of_module_plus_identity(gamma, fmt):
    """``form.forward_residual(x, identity)`` = ``relu(module(x) + identity)`` (1e-5) for every form (the fused
    ones and the fallback), in x's memory format, and neither input is written."""
    for i, (kind, opts) in enumerate(SPECS):
        torch.manual_seed(i)
        module = build_attention(dict(type=kind, **opts), 24, identity_init=gamma).eval()
        randomise_norms(module, i, gammas=True)
        x = (torch.randn(2, 24, 7, 10) * 3).contiguous(memory_format=fmt)
        identity = torch.randn(2, 24, 7, 10).contiguous(memory_format=fmt)
        before = (x.clone(), identity.clone())
        form = inference_form(module)
        form.inplace = form.can_run_inplace  # as allow_inplace sets it: a tail never writes its inputs either way
        with torch.no_grad():
            expected, got = torch.relu(module(x) + identity), form.forward_residual(x, identity)
        assert _rel(expected, got) <= 1e-5, (kind, opts, _rel(expected, got))
        assert got.is_contiguous(memory_format=fmt), (kind, opts)
        assert torch.equal(x, before[0]) and torch.equal(identity, before[1]), (kind, opts)
        assert form.fuses_residual == (kind in ('se', 'eca', 'cbam') or (kind == 'gc' and 'scale' in
                                                                          str(opts.get('fusion', 'add'))))


FUSED_SPECS = [('se', {}), ('se', {'layout': 'timm'}), ('eca', {}), ('cbam', {}), ('cbam', {'layout': 'timm'}),
               ('gc', {'fusion': 'scale'}), ('gc', {'fusion': ('scale', 'add')})]


@pytest.mark.parametrize('depth', [18, 50])
@pytest.mark.parametrize('spec', FUSED_SPECS, ids=lambda s: f"{s[0]}-{'-'.join(map(str, s[1].values())) or 'default'}")
def test_fast_path_fuses_gates_with_the_residual_addition(spec, depth):
    """A ResNet (basic and bottleneck blocks) with a gate before each residual addition: the fast path runs the
    gate, the addition and the ReLU as one tail per block -- the forms are unhooked from their norm but stay
    registered (same state dict) -- and the stage outputs equal eager (1e-5; 5e-4 for R50's 16 folded random
    blocks) with and without gamma, in both memory formats; ``fuse_residual=False`` keeps them attached as before,
    with the same outputs."""
    from attnkit.deploy import fuse_residual_tails
    kind, opts = spec
    x = torch.randn(2, 3, 64, 48)
    tol = 1e-5 if depth == 18 else 5e-4
    for gamma in (True, False):
        torch.manual_seed(depth)
        model = build_backbone(dict(type='ResNet', depth=depth, base_channels=8, identity_init=gamma,
                                    attention=dict(type=kind, **opts))).eval()
        randomise_norms(model, gammas=True)
        names = [a.module_name for a in attachments(model)]
        assert len(names) == (6 if depth == 18 else 13)
        with torch.no_grad():
            expected = model(x)
        for channels_last in (True, False):
            fast, report = prepare_fast(copy.deepcopy(model), bf16=False, channels_last=channels_last)
            assert report.fused_tails == names and report.inplace_forms == []
            assert f'{len(names)} fused with the residual addition' in report.summary()
            assert attachments(fast) == [] and reattach(fast) == 0  # unhooked for good: nothing to restore
            assert all(fast.get_submodule(n.rpartition('.')[0]).attn_fused_tail for n in names)
            assert fast.state_dict().keys() == prepare_fast(copy.deepcopy(model), bf16=False,
                                                            fuse_residual=False)[0].state_dict().keys()
            assert fuse_residual_tails(fast) == []  # idempotent
            got = fast(x)
            for a, b in zip(expected, got):  # R50's 16 folded random blocks (outputs ~1e3) round more than R18's 8
                assert _rel(a, b) <= tol, (kind, opts, gamma, channels_last, _rel(a, b))
        unfused, report = prepare_fast(copy.deepcopy(model), bf16=False, fuse_residual=False)
        assert report.fused_tails == [] and len(attachments(unfused)) == len(names)
        for a, b, c in zip(expected, unfused(x), got):
            assert _rel(a, b) <= tol and _rel(b, c) <= tol, (_rel(a, b), _rel(b, c))


@pytest.mark.parametrize('case', ['after_block', 'gc-add', 'coord', 'eager', 'compile'])
def test_residual_tails_only_where_they_save_a_pass(case):
    """No fused tail for attention after the block's ReLU, for gc 'add' and coord (no pass to save), with the
    modules as trained (``attention='eager'``) or compiled forms."""
    kind = {'gc-add': 'gc', 'coord': 'coord'}.get(case, 'se')
    attention = dict(type=kind, position='after_block' if case == 'after_block' else 'after_conv3')
    model = build_backbone(dict(type='ResNet', depth=18, base_channels=8, attention=attention,
                                identity_init=True)).eval()
    randomise_norms(model, gammas=True)
    mode = {'eager': 'eager', 'compile': 'compile'}.get(case, 'fast')
    _, report = prepare_fast(copy.deepcopy(model), bf16=False, attention=mode)
    assert report.fused_tails == [] and 'fused with the residual' not in report.summary()


@pytest.mark.parametrize('fmt', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'nhwc'])
def test_compiled_cbam_form_equals_its_module(fmt):
    """attention='compile' on a CBAM backbone block really compiles (inductor) the formulation written for it,
    and the compiled form computes the eager module (1e-5), in x's memory format; x is left as it was."""
    torch.manual_seed(0)
    module = build_attention(dict(type='cbam'), 32, identity_init=True).eval()
    randomise_norms(module, 0, gammas=True)
    holder = torch.nn.Sequential(module)
    swapped = swap_inference_forms(holder, compile=True)
    form = holder[0]
    assert swapped == {'0': 'cbam'} and form.for_compiler and form._compiled_call_impl is not None
    x = (torch.randn(2, 32, 9, 12) * 3).contiguous(memory_format=fmt)
    before = x.clone()
    with torch.no_grad():
        expected, got = module(x), form(x)
    assert _rel(expected, got) <= 1e-5 and got.is_contiguous(memory_format=fmt)
    assert torch.equal(x, before)


class _Tapped(torch.nn.Module):
    """conv -> tap (an nn.Identity placeholder) -> head, and the conv's output is read again after the head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.tap = torch.nn.Identity()
        self.head = torch.nn.Conv2d(16, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.head(self.tap(y)) + y


@pytest.mark.parametrize('kind', ['se', 'cbam', 'gc'])
def test_forms_run_in_place_only_where_nobody_else_reads_the_input(kind):
    """Attention after a conv (its new output) runs in place; after an nn.Identity whose input is read again,
    or before a module, it must not: in place there would change ``y`` under the residual read."""
    from attnkit.attention import insert
    torch.manual_seed(0)
    model = _Tapped().eval()
    insert(model, dict(type=kind, after=['conv'], name='conv_attn', identity_init=False))
    insert(model, dict(type=kind, after=['tap'], name='tap_attn', identity_init=False))
    insert(model, dict(type=kind, before=['head'], name='head_attn', identity_init=False))
    x = torch.randn(2, 3, 12, 10)
    with torch.no_grad():
        expected = model(x)
    fast, report = prepare_fast(copy.deepcopy(model), bf16=False, channels_last=False)
    assert sorted(report.attention_forms) == ['conv_attn', 'head_attn', 'tap_attn']
    assert report.inplace_forms == ['conv_attn']
    assert not fast.tap_attn.inplace and not fast.head_attn.inplace and 'inplace' in repr(fast.conv_attn)
    assert _rel(expected, fast(x)) <= 1e-5


def test_attention_modes_eager_compile_and_bad_name():
    torch.manual_seed(0)
    model = build_backbone(dict(type='ResNet', depth=18, base_channels=8, attention=dict(type='cbam'),
                                identity_init=True)).eval()
    randomise_norms(model, gammas=True)
    eager, report = prepare_fast(copy.deepcopy(model), bf16=False, attention='eager')
    assert report.attention_forms == {} and 'attention modules eager' in report.summary()
    assert sum(isinstance(m, AttentionModule) for m in eager.modules()) == 6
    # 'compile' wraps each form in torch.compile (compilation itself happens on the first call, not here)
    compiled, report = prepare_fast(copy.deepcopy(model), bf16=False, attention='compile')
    forms = [m for m in compiled.modules() if isinstance(m, InferenceGate)]
    assert len(forms) == 6 and all(m._compiled_call_impl is not None for m in forms)
    assert 'in inference form (cbam 6), compiled alone' in report.summary()
    with pytest.raises(ConfigError, match="attention 'compiled' is not one of .*Did you mean 'compile'"):
        prepare_fast(copy.deepcopy(model), attention='compiled')


def test_inference_forms_run_under_bf16_autocast():
    """bf16 forced (emulated on CPUs without bf16 units): the forms take bf16 maps and stay near eager fp32."""
    torch.manual_seed(0)
    model = build_backbone(dict(type='ResNet', depth=18, base_channels=8, attention=dict(type='cbam'),
                                identity_init=True, out_indices=(3,))).eval()
    randomise_norms(model, gammas=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)[0]
    fast, report = prepare_fast(copy.deepcopy(model), bf16=True)
    got = fast(x)[0]
    assert report.bf16 and len(report.attention_forms) == 6
    assert got.dtype == torch.bfloat16 and _rel(expected, got.float()) < 0.1
