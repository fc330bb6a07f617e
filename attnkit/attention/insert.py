"""Place attention in any ``nn.Module`` by module name: the one mechanism for "attention anywhere".

``insert(model, dict(type='cbam', after=['layer2.*', 'stages.3'], reduction=8))`` finds the modules whose names
match the patterns and sends each one's output (``after=``) or first input (``before=``) through a new attention
module sized from the channels there, or puts the attention module in its place (``replace=``).

How it is attached (so pretrained weights keep loading):

* the matched module keeps its name and its state-dict keys; its class is swapped for a subclass (same name +
  ``WithAttention``) whose ``forward`` runs the attention before/after the original ``forward``;
* the new attention module is registered on the nearest ancestor-or-self of the matched module that has children
  and is not a container (``Sequential``, ``ModuleList``, ``ModuleDict`` run their children in order, so nothing
  may be added to them), under ``name`` (default ``<path from there, dots as _>_attn``). A ResNet block's
  ``bn3`` gets its attention at ``layer1.0.attn`` (``name='attn'``), exactly where attnkit's ResNet always kept it;
* a missing attention key in a pretrained file is therefore just a missing key, and an identity-initialised
  module (learnable ``gamma = 0``, see :class:`~attnkit.attention.base.AttentionModule`) leaves the pretrained
  network's outputs unchanged at step 0.

Code that *replaces* a module (conv–BN folding, SyncBN conversion) must keep the attachment:
:func:`replace_module` does, and :func:`reattach` restores every attachment recorded on the owners after a
conversion that rebuilt modules (``nn.SyncBatchNorm.convert_sync_batchnorm``).

Patterns are dot-separated module names; ``*``, ``?`` and ``[...]`` match inside one name segment (``layer2.*`` =
the blocks of layer2, not their convolutions) and a ``**`` segment matches any number of segments. ``''`` names
the model itself.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..builder import build_attention
from ..errors import ConfigError
from ..registry import closest_names
from .base import AttentionModule

__all__ = ['InsertedPlace', 'Attachment', 'insert', 'attachments', 'reattach', 'replace_module', 'detach',
           'match_modules', 'WHERE']

WHERE = ('after', 'before', 'replace')
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_RECORDS = '_attnkit_places'  # on an owner: {attention name: (target path relative to the owner, where)}


@dataclass(frozen=True)
class InsertedPlace:
    """One change made by :func:`insert`.

    Attributes:
        target: the matched module's (display) name.
        where: ``'after'``, ``'before'`` or ``'replace'``.
        module_name: the new attention module's full name in the model (its state-dict prefix).
        channels: channels the attention module was built for.
    """

    target: str
    where: str
    module_name: str
    channels: int


@dataclass(frozen=True)
class Attachment:
    """An attention module attached to a target module (see :func:`attachments`)."""

    target_name: str
    where: str
    module_name: str
    attention: nn.Module


class _WithAttention:
    """Mixin of the swapped classes: attention before the first input / after the output of ``forward``."""

    _attnkit_before: list[nn.Module]
    _attnkit_after: list[nn.Module]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._attnkit_before and args:
            first = args[0]
            for module in self._attnkit_before:
                first = module(first)
            args = (first,) + tuple(args[1:])
        out = super().forward(*args, **kwargs)  # type: ignore[misc]
        for module in self._attnkit_after:
            out = _apply_to_output(module, out)
        return out


def _apply_to_output(module: nn.Module, out: Any) -> Any:
    """Attention on a module's output: the tensor itself, or the first element of a tuple/list output."""
    if isinstance(out, Tensor):
        return module(out)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return type(out)([module(out[0]), *out[1:]]) if isinstance(out, list) else (module(out[0]), *out[1:])
    raise TypeError(f'attention after a module needs a tensor output (or a tuple whose first item is one), got '
                    f'{type(out).__name__}.')


_SWAPPED: dict[type, type] = {}


def _swap_class(module: nn.Module) -> None:
    """Give ``module`` the attention-running subclass of its class (once), with empty attachment lists."""
    if isinstance(module, _WithAttention):
        return
    base = type(module)
    cls = _SWAPPED.get(base)
    if cls is None:
        cls = type(f'{base.__name__}WithAttention', (_WithAttention, base),
                   {'__module__': base.__module__, '__doc__': base.__doc__})
        _SWAPPED[base] = cls
    module.__class__ = cls
    object.__setattr__(module, '_attnkit_before', [])
    object.__setattr__(module, '_attnkit_after', [])


def _unswap_if_empty(module: nn.Module) -> None:
    if isinstance(module, _WithAttention) and not module._attnkit_before and not module._attnkit_after:
        base = next(c for c in type(module).__mro__[1:] if not issubclass(c, _WithAttention))
        module.__class__ = base
        del module.__dict__['_attnkit_before'], module.__dict__['_attnkit_after']


def _segments_match(pattern: Sequence[str], name: Sequence[str]) -> bool:
    if not pattern:
        return not name
    if pattern[0] == '**':
        start = 1 if len(pattern) == 1 else 0
        return any(_segments_match(pattern[1:], name[i:]) for i in range(start, len(name) + 1))
    return bool(name) and fnmatch.fnmatchcase(name[0], pattern[0]) and _segments_match(pattern[1:], name[1:])


def _split(name: str) -> list[str]:
    return name.split('.') if name else []


def _display_names(model: nn.Module, names: Mapping[str, str] | None) -> dict[str, str]:
    """display name -> real module path, without modules inside attention modules (theirs are not targets)."""
    if names is not None:
        return dict(names)
    out: dict[str, str] = {}
    inside: list[str] = []
    for path, module in model.named_modules():
        if any(path == p or path.startswith(p + '.') for p in inside):
            continue
        out[path] = path
        if isinstance(module, AttentionModule) and path:
            inside.append(path)
    return out


def match_modules(model: nn.Module, patterns: str | Iterable[str], *, names: Mapping[str, str] | None = None,
                  what: str = 'pattern') -> list[tuple[str, str]]:
    """``(display name, real path)`` of every module matching any of ``patterns``, in model order.

    Raises:
        ConfigError: a pattern that matches nothing, naming the closest module names.
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    display = _display_names(model, names)
    hits: dict[str, str] = {}
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(f'{what} {pattern!r} must be a string of dot-separated module names.')
        found = [d for d in display if _segments_match(_split(pattern), _split(d))]
        if not found:
            close = closest_names(pattern, [d for d in display if d], n=5, cutoff=0.3)
            top = sorted({d.split('.')[0] for d in display if d})
            hint = (f" Closest module names: {', '.join(repr(c) for c in close)}." if close else '')
            raise ConfigError(f'{what} {pattern!r} matches no module of {type(model).__name__}.{hint} '
                              f"Top-level modules: {', '.join(repr(t) for t in top[:12])}"
                              f"{', ...' if len(top) > 12 else ''}.")
        for d in found:
            hits.setdefault(d, display[d])
    order = {p: i for i, (p, _) in enumerate(model.named_modules(remove_duplicate=False))}
    return sorted(hits.items(), key=lambda item: order.get(item[1], -1))


def _owner_of(model: nn.Module, path: str) -> str:
    """The nearest ancestor-or-self of ``path`` that has children and is not a container."""
    parts = _split(path)
    for k in range(len(parts), -1, -1):
        candidate = '.'.join(parts[:k])
        module = model.get_submodule(candidate)
        is_leaf = next(iter(module.children()), None) is None
        if not isinstance(module, _CONTAINERS) and not (is_leaf and k == len(parts) and k > 0):
            return candidate
    raise ConfigError(f'insert: {type(model).__name__} is itself a container ({type(model).__name__}); wrap it in a '
                      'module to insert attention into it.')


def _static_channels(module: nn.Module, where: str) -> int | None:
    if isinstance(module, nn.Conv2d):
        return module.out_channels if where == 'after' else module.in_channels
    for attr in ('num_features', 'num_channels'):  # batch/instance norms, GroupNorm
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(module, nn.Linear):
            return value
    return None


def first_tensor(value: Any) -> Tensor | None:
    """``value`` if it is a tensor, else the first item of a tuple/list output when that is one, else None."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def _dry_run_shapes(model: nn.Module, targets: Sequence[tuple[str, str, str]], example_input: Any
                    ) -> dict[tuple[str, str], tuple[int, ...]]:
    """Shapes of the tensor each (display, path, where) target sees, from one eval-mode forward without grad."""
    shapes: dict[tuple[str, str], tuple[int, ...]] = {}
    handles = []
    for display, path, where in targets:
        module = model.get_submodule(path)

        def hook(mod, args, out, key=(path, where)):
            tensor = first_tensor(out if key[1] == 'after' else args)
            if tensor is not None and key not in shapes:
                shapes[key] = tuple(tensor.shape)
        handles.append(module.register_forward_hook(hook))
    modes = {m: m.training for m in model.modules()}
    if example_input is None:
        example_input = torch.zeros(1, 3, 64, 64)
    try:
        model.eval()
        param = next(model.parameters(), None)
        inputs = example_input
        if isinstance(inputs, Tensor) and param is not None:
            inputs = inputs.to(param.device)
        with torch.no_grad():
            model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    except Exception as exc:  # noqa: BLE001 - re-raised as a config error saying what to pass
        raise ConfigError(f'insert: the dry forward of {type(model).__name__} on an input of shape '
                          f"{tuple(getattr(example_input, 'shape', ()))} failed ({type(exc).__name__}: {exc}); pass "
                          "example_input= (what the model takes) or channels= in the spec.") from exc
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return shapes


def _free_name(owner: nn.Module, name: str) -> str:
    candidate, k = name, 2
    while candidate in owner._modules or (hasattr(owner, candidate) and getattr(owner, candidate) is not None):
        candidate, k = f'{name}_{k}', k + 1
    return candidate


def _register(owner: nn.Module, name: str, module: nn.Module) -> None:
    if name in owner.__dict__ and owner.__dict__[name] is None:  # a declared, empty slot (``self.attn = None``)
        del owner.__dict__[name]
    owner.add_module(name, module)


def _join(*parts: str) -> str:
    return '.'.join(p for p in parts if p)


def insert(model: nn.Module, spec: Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
           identity_init: bool | None = None, example_input: Any = None,
           names: Mapping[str, str] | None = None) -> list[InsertedPlace]:
    """Insert attention modules into ``model`` in place; return every place changed.

    Args:
        model: any module.
        spec: ``dict(type=<registered attention>, after=[...] | before=[...] | replace=[...], channels=None,
            name=None, **module_kwargs)`` (or a list of such dicts). Patterns: see the module docstring.
            ``channels`` fixes the width; otherwise it is read from a matched ``Conv2d``/norm layer, else from one
            dry forward of ``model(example_input)`` in eval mode without gradients.
        identity_init: build the modules as the exact identity (``gamma = 0``); None takes ``spec['identity_init']``,
            default True (attention inserted into a trained network must not change it).
        example_input: the input of the dry forward (a tensor, or a tuple of positional arguments); default
            ``torch.zeros(1, 3, 64, 64)``.
        names: optional display-name -> module-path map: patterns are matched against (and errors name) the
            display names, e.g. a wrapper's ``stages.3`` for its inner model's ``model.stages_3``.

    Returns:
        One :class:`InsertedPlace` per inserted module, in model order.

    Raises:
        ConfigError: no ``type``, none or several of after/before/replace, a pattern matching nothing (with the
            closest module names), a target whose output is not an (N, C, H, W) map.
    """
    if not isinstance(spec, Mapping):
        places: list[InsertedPlace] = []
        for one in spec:
            places += insert(model, one, identity_init=identity_init, example_input=example_input, names=names)
        return places
    cfg = dict(spec)
    if 'type' not in cfg:
        raise ConfigError(f"insert: the spec {dict(spec)!r} has no 'type' (a registered attention module).")
    given = [w for w in WHERE if cfg.get(w) is not None]
    if len(given) != 1:
        raise ConfigError(f"insert: the spec needs exactly one of after=, before=, replace= (module name patterns), "
                          f"got {', '.join(given) or 'none'}.")
    where = given[0]
    patterns = cfg.pop(where)
    for w in WHERE:
        cfg.pop(w, None)
    channels = cfg.pop('channels', None)
    name = cfg.pop('name', None)
    if identity_init is None:
        identity_init = bool(cfg.pop('identity_init', True))
    else:
        cfg.pop('identity_init', None)
    matched = match_modules(model, patterns, names=names, what=f'insert {where}=')

    widths: dict[str, int] = {}
    unknown = []
    for display, path in matched:
        width = channels if channels is not None else _static_channels(model.get_submodule(path), where)
        if width is None:
            unknown.append((display, path, 'before' if where == 'before' else 'after'))
        else:
            widths[path] = int(width)
    if unknown:
        shapes = _dry_run_shapes(model, unknown, example_input)
        for display, path, side in unknown:
            shape = shapes.get((path, side))
            if shape is None:
                raise ConfigError(f'insert: {display!r} did not run in the dry forward of {type(model).__name__}; '
                                  "pass channels= in the spec.")
            if len(shape) != 4:
                raise ConfigError(f"insert: the {'output' if side == 'after' else 'input'} of {display!r} has shape "
                                  f'{shape}, not an (N, C, H, W) feature map; attention modules need maps (token '
                                  'sequences must be reshaped to their grid first).')
            widths[path] = int(shape[1])

    places = []
    for display, path in matched:
        target = model.get_submodule(path)
        width = widths[path]
        extra: dict[str, Any] = {'identity_init': identity_init}
        if where == 'replace':
            if isinstance(target, nn.Conv2d):
                if target.in_channels != target.out_channels:
                    raise ConfigError(f'insert replace={display!r}: a {target.in_channels}->{target.out_channels} '
                                      'convolution cannot be replaced by an attention module (in = out channels).')
                stride = target.stride[0] if isinstance(target.stride, tuple) else int(target.stride)
                if stride != 1:
                    extra['stride'] = stride
            attention = build_attention(cfg, width, **extra)
            replace_module(model, path, attention)
            places.append(InsertedPlace(display, where, path, width))
            continue
        attention = build_attention(cfg, width, **extra)
        owner_path = _owner_of(model, path)
        owner = model.get_submodule(owner_path)
        relative = path[len(owner_path) + 1:] if owner_path else path
        default = (relative.replace('.', '_') + '_' if relative else '') + 'attn' + ('_before' if where == 'before'
                                                                                    else '')
        attn_name = _free_name(owner, name or default)
        _register(owner, attn_name, attention)
        _swap_class(target)
        (target._attnkit_after if where == 'after' else target._attnkit_before).append(attention)
        records = owner.__dict__.setdefault(_RECORDS, {})
        records[attn_name] = (relative, where)
        places.append(InsertedPlace(display, where, _join(owner_path, attn_name), width))
    return places


def attachments(model: nn.Module) -> list[Attachment]:
    """Every attention module attached by :func:`insert` (after/before), with its target, in model order."""
    found = []
    for owner_path, owner in model.named_modules():
        for attn_name, (relative, where) in owner.__dict__.get(_RECORDS, {}).items():
            found.append(Attachment(_join(owner_path, relative), where, _join(owner_path, attn_name),
                                    owner.get_submodule(attn_name)))
    return found


def reattach(model: nn.Module) -> int:
    """Re-attach every recorded attention module to its target (after a conversion rebuilt modules).

    Returns:
        How many attachments had been lost and were restored.
    """
    restored = 0
    for owner_path, owner in model.named_modules():
        for attn_name, (relative, where) in owner.__dict__.get(_RECORDS, {}).items():
            attention = owner.get_submodule(attn_name)
            target = owner.get_submodule(relative)
            lists = (getattr(target, '_attnkit_after', None), getattr(target, '_attnkit_before', None))
            if any(lst is not None and any(m is attention for m in lst) for lst in lists):
                continue
            _swap_class(target)
            (target._attnkit_after if where == 'after' else target._attnkit_before).append(attention)
            restored += 1
    return restored


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``name`` in ``model``, moving any attention attached to the old module onto it.

    Returns:
        The old module.
    """
    parent_path, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_path)
    old = parent.get_submodule(child)
    before = list(getattr(old, '_attnkit_before', []))
    after = list(getattr(old, '_attnkit_after', []))
    if before or after:
        _swap_class(new)
        new._attnkit_before.extend(m for m in before if m not in new._attnkit_before)
        new._attnkit_after.extend(m for m in after if m not in new._attnkit_after)
    setattr(parent, child, new)
    return old


def detach(model: nn.Module, module_name: str, keep_module: bool = False) -> nn.Module:
    """Remove the attached attention module ``module_name`` (an :class:`InsertedPlace.module_name`) from the model.

    ``keep_module``: only stop running it at its target; it stays registered under its name (its weights stay in
    the state dict) for code that calls it itself (the fast path's fused residual tails).

    Returns:
        The removed (or unhooked) module.
    """
    owner_path, _, attn_name = module_name.rpartition('.')
    owner = model.get_submodule(owner_path)
    records = owner.__dict__.get(_RECORDS, {})
    if attn_name not in records:
        raise ConfigError(f'detach: {module_name!r} is not an attention module attached by insert(); attached: '
                          f"{', '.join(a.module_name for a in attachments(model)) or '(none)'}.")
    relative, where = records.pop(attn_name)
    attention = owner.get_submodule(attn_name)
    target = owner.get_submodule(relative)
    for lst in (getattr(target, '_attnkit_after', []), getattr(target, '_attnkit_before', [])):
        lst[:] = [m for m in lst if m is not attention]
    _unswap_if_empty(target)
    if not keep_module:
        del owner._modules[attn_name]
    return attention
