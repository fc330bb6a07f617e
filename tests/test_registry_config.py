"""Registries' errors, config inheritance and dotted overrides."""
import textwrap

import pytest

from attnkit.config import load_config
from attnkit.errors import ConfigError
from attnkit.registry import ATTENTION, build


def test_unknown_type_names_registry_and_closest(tmp_path):
    with pytest.raises(ConfigError) as err:
        build(ATTENTION, dict(type='cbma'), channels=8)
    msg = str(err.value)
    assert 'attention' in msg and "'cbma'" in msg and "'cbam'" in msg


def test_unknown_argument_is_named():
    with pytest.raises(ConfigError, match="'reductoin'.*Did you mean 'reduction'"):
        build(ATTENTION, dict(type='se', reductoin=4), channels=8)


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / 'base.py').write_text(textwrap.dedent("""
        model = dict(type='Detector', backbone=dict(type='ResNet', depth=50, out_indices=(1, 2, 3)))
        schedule = dict(max_epochs=12)
    """))
    (tmp_path / 'child.py').write_text(textwrap.dedent("""
        _base_ = ['./base.py']
        model = dict(backbone=dict(attention=dict(type='cbam')))
    """))
    cfg = load_config(tmp_path / 'child.py', {'model.backbone.depth': 18, 'schedule.max_epochs': 2})
    assert cfg.model.backbone.depth == 18
    assert cfg.model.backbone.out_indices == (1, 2, 3)
    assert cfg.model.backbone.attention.type == 'cbam'
    assert cfg.schedule.max_epochs == 2
    with pytest.raises(ConfigError, match="no key 'bakbone'"):
        load_config(tmp_path / 'child.py', {'model.bakbone.depth': 18})
    with pytest.raises(ConfigError, match='does not exist'):
        load_config(tmp_path / 'missing.py')
