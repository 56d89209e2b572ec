"""[daemon], [http] and [logging] settings: process-wide behaviour."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bridge.settings.addresses import parse_host_port
from bridge.settings.base import Section


class HttpSettings(Section):
    # /healthz, /metrics (and the Plivo stream WebSocket and /calls API when enabled)
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8080, ge=0, le=65535)


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # auto: JSON lines under systemd (no TTY / JOURNAL_STREAM set), readable text in a terminal
    format: Literal["auto", "json", "text"] = "auto"
    # DPDPA: numbers are masked unless this is set explicitly.
    log_phone_numbers: bool = False


class DaemonSettings(Section):
    # echo | prompt | conversation (the configured agent)
    agent: str = "conversation"
    prompt_file: str = ""  # audio played by the prompt agent (WAV, any rate, mono)
    prompt_listen_s: float = Field(5.0, ge=0)  # the prompt agent listens this long, then hangs up
    drain_timeout_s: float = Field(30.0, ge=0)
    data_dir: str = "var"
    # Plivo audio-stream WebSocket server (HOST:PORT); empty = not served. Several daemons on
    # one host may share the port (SO_REUSEPORT): one stream URL for all of them.
    stream_listen: str = ""
    # A daemon at capacity or shedding load steps out of the stream port's SO_REUSEPORT group
    # (closes its listening socket, keeps its streams) so that the kernel gives new streams to
    # the daemons with room, and rejoins after stream_rejoin_after_s without being busy. The
    # last listener never leaves (a lone daemon answers 503 as before): README, "One stream URL".
    stream_leave_when_busy: bool = True
    stream_rejoin_after_s: float = Field(2.0, ge=0)
    # Refuse new calls and streams (503; OPTIONS 503 too) while the event loop's mean lag over
    # the last second is above this many ms, until it is back under half of it. 0 = never.
    shed_loop_lag_ms: float = Field(100.0, ge=0)
    # Also refuse them while this process used more than this % of one core over the last
    # second (until 10 points under): before the loop saturates, not once it has. 0 = off.
    shed_cpu_percent: float = Field(0.0, ge=0, le=100)
    # asyncio (the standard library's loop, the default) | uvloop (libuv). uvloop's own
    # machinery is cheaper, but on 2026-12-01 it paced RTP no better (README, "event loop")
    # and lost replies at 150 stream calls where asyncio's did not. Without uvloop installed
    # the daemon runs on asyncio's and logs one warning.
    event_loop: Literal["uvloop", "asyncio"] = "asyncio"

    @field_validator("stream_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        # Checked when the settings load, so `voice-bridge check` names it, not the start-up.
        if value:
            parse_host_port(value, "0.0.0.0")
        return value
