"""Every registered channel has a local fake: the demo, the tests and the bench reach it through one."""

from __future__ import annotations

from devtools.fakes.registry import FAKES
from herald.channels import registry


def test_every_registered_channel_has_a_fake_and_no_fake_is_left_over() -> None:
    assert set(FAKES) == set(registry.names())

