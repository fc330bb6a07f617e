"""runtime.channels_last: True / False / 'auto' (CUDA always; CPU for inference only)."""
import pytest
import torch

from attnkit.engine.utils import resolve_channels_last
from attnkit.errors import ConfigError


def test_auto_follows_device_and_mode():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert resolve_channels_last('auto', cuda, training=True)
    assert resolve_channels_last('auto', cpu, training=False)
    assert not resolve_channels_last('auto', cpu, training=True)
    assert resolve_channels_last(True, cpu, training=True)
    assert not resolve_channels_last(False, cuda, training=False)
    with pytest.raises(ConfigError, match="'yes'"):
        resolve_channels_last('yes', cpu, training=True)
