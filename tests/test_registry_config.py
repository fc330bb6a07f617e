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


def test_cfg_options_accept_python_dicts_from_the_command_line(tmp_path):
    """`--cfg-options "model.backbone.attention=dict(type='se', reduction=4)"` as a shell passes it: mmengine's
    DictAction leaves dict(...) a string; attnkit parses it (ast, no eval) into a dict merged into the config."""
    from attnkit.builder import build_model
    from attnkit.cli import build_parser
    (tmp_path / 'cfg.py').write_text(textwrap.dedent("""
        model = dict(type='Detector', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3)),
                     neck=dict(type='FPN', out_channels=16, num_outs=3),
                     head=dict(type='FCOSHead', feat_channels=16, stacked_convs=1, strides=(8, 16, 32),
                               regress_ranges=((-1, 16), (16, 32), (32, 1e8))))
    """))
    args = build_parser().parse_args([
        'train', str(tmp_path / 'cfg.py'), '--cfg-options',
        "model.backbone.attention=dict(type='se', reduction=4, stages=(False, True, True, True))",
        "model.neck={'num_outs': 3, 'out_channels': 16}", 'model.head.strides=[8,16,32]'])
    cfg = load_config(tmp_path / 'cfg.py', args.cfg_options)
    assert cfg.model.backbone.attention.to_dict() == {'type': 'se', 'reduction': 4,
                                                      'stages': (False, True, True, True)}
    assert cfg.model.backbone.depth == 18 and cfg.model.neck.type == 'FPN'  # merged, not replaced
    model = build_model(cfg.model, metainfo={'classes': ['a', 'b']})
    from attnkit.attention.se import SEModule
    se = [m for m in model.backbone.modules() if isinstance(m, SEModule)]
    assert len(se) == 6 and [m.fc1.out_features for m in se[-2:]] == [16, 16]  # layer4: 64 // reduction 4
    with pytest.raises(ConfigError, match=r"--cfg-options model.head=dict\(type='x',: not valid Python"):
        load_config(tmp_path / 'cfg.py', {'model.head': "dict(type='x',"})
    with pytest.raises(ConfigError, match='not a literal'):
        load_config(tmp_path / 'cfg.py', {'model.head': 'dict(type=os.system)'})
