"""daemon.event_loop: the loop a process runs on, asyncio's by default, uvloop on request (asyncio's
when uvloop cannot be imported (one warning, not a failed start)."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from bridge import event_loop
from bridge.settings import Settings, load_settings


async def _running() -> str:
    await asyncio.sleep(0)
    return event_loop.loop_name()


@pytest.mark.parametrize("name", event_loop.LOOP_NAMES)
def test_run_uses_the_named_loop(name: str) -> None:
    assert event_loop.run(_running(), name) == name


def test_asyncio_is_the_default_setting_and_the_environment_overrides_it() -> None:
    assert Settings().daemon.event_loop == event_loop.DEFAULT_LOOP == "asyncio"
    settings = load_settings(None, environ={"VOICE_BRIDGE_DAEMON__EVENT_LOOP": "uvloop"})
    assert settings.daemon.event_loop == "uvloop"


def test_an_unknown_loop_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="uvloop, asyncio"):
        event_loop.run(_running(), "trio")


def test_without_uvloop_the_asyncio_loop_runs_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    monkeypatch.setattr(event_loop, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="bridge.event_loop"):
        assert event_loop.loop_factory("uvloop")[1] == "asyncio"
        assert event_loop.run(_running(), "uvloop") == "asyncio"
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["uvloop not available"]
