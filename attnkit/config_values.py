"""``--cfg-options`` values written as Python: ``model.head=dict(type='mcan', dim=64)``.

mmengine's ``DictAction`` parses numbers, strings, lists and tuples but leaves ``dict(...)`` (and ``{...}``) as the
string it was given; put into the config, that string later fails far from the command line. Here such values
are parsed safely (:mod:`ast`, no evaluation): ``dict(...)`` calls with keyword arguments, dict displays, lists,
tuples and literals, nested in any way. Anything else is returned unchanged.
"""
from __future__ import annotations

import ast
from typing import Any

from mmengine.config import DictAction

from .errors import ConfigError

__all__ = ['parse_option_value', 'OptionsAction']


class OptionsAction(DictAction):
    """mmengine's ``DictAction`` for ``--cfg-options``, except that a value holding ``dict(`` or written ``{...}``
    is kept as text (mmengine's own parser recurses without end on ``dict(a=(1, 2))``) for
    :func:`parse_option_value`, which ``load_config`` applies."""

    @staticmethod
    def _parse_iterable(val: str) -> Any:
        text = val.strip()
        if 'dict(' in text or (text.startswith('{') and text.endswith('}')):
            return val
        return DictAction._parse_iterable(val)


def _node_value(node: ast.AST, key: str, text: str) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict':
        if node.args or any(k.arg is None for k in node.keywords):
            raise ConfigError(f'--cfg-options {key}={text}: write dict(...) with keyword arguments only, '
                              "e.g. dict(type='mcan', dim=64).")
        return {k.arg: _node_value(k.value, key, text) for k in node.keywords}
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ConfigError(f'--cfg-options {key}={text}: ** unpacking is not supported.')
        return {_node_value(k, key, text): _node_value(v, key, text) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.List):
        return [_node_value(e, key, text) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_node_value(e, key, text) for e in node.elts)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ConfigError(f'--cfg-options {key}={text}: {ast.unparse(node)!r} is not a literal (numbers, strings, '
                          'True/False/None, lists, tuples, dict(...)); names and calls other than dict() are not '
                          'evaluated.') from None


def parse_option_value(key: str, value: Any) -> Any:
    """``value`` with every string that reads as ``dict(...)`` or ``{...}`` parsed into a dict (recursively in
    lists and tuples); other values unchanged. A ``dict(`` string that does not parse -> ConfigError naming
    the option."""
    if isinstance(value, (list, tuple)):
        return type(value)(parse_option_value(key, v) for v in value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not ('dict(' in text or (text.startswith('{') and text.endswith('}'))):
        return value
    try:
        tree = ast.parse(text, mode='eval')
    except SyntaxError as exc:
        raise ConfigError(f'--cfg-options {key}={value}: not valid Python ({exc.msg}); quote the whole value for '
                          "the shell, e.g. \"model.head=dict(type='mcan', dim=64)\".") from None
    return _node_value(tree.body, key, value)
