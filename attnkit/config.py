"""Loading configs: mmengine Python configs with ``_base_`` inheritance and ``--cfg-options`` overrides."""
from __future__ import annotations

import os
from typing import Any, Mapping

from mmengine.config import Config

from .errors import ConfigError

__all__ = ['load_config', 'Config']


def load_config(path: str | os.PathLike, cfg_options: Mapping[str, Any] | None = None) -> Config:
    """Read ``path`` (resolving ``_base_`` files) and apply dotted overrides.

    Args:
        path: a ``.py`` config file.
        cfg_options: ``{'model.backbone.depth': 18, 'data.train.batch_size': 4}``: each dotted key must
            name an existing key (a typo is an error, not a silently added setting) except the last
            part, which may be new.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"Config file {path!r} does not exist.")
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # syntax errors, missing _base_ files
        raise ConfigError(f"Could not read config {path!r}: {exc}") from exc
    if cfg_options:
        for key in cfg_options:
            _check_dotted_key(cfg, key, path)
        cfg.merge_from_dict(dict(cfg_options))
    return cfg


def _check_dotted_key(cfg: Config, key: str, path: str) -> None:
    node: Any = cfg._cfg_dict if isinstance(cfg, Config) else cfg  # Config itself is not a Mapping
    parts = key.split('.')
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, Mapping) or part not in node:
            where = '.'.join(parts[:depth]) or '<top level>'
            raise ConfigError(f"--cfg-options key {key!r}: {where!r} of config {path!r} has no key {part!r}.")
        node = node[part]
