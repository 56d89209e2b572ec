"""Two live calls that share a call id (two INVITEs with one Call-ID and other From tags, which
RFC 3261 allows) are two calls to the supervisor: the end of one never forgets, frees or
counts the other, and a second call under a key already live is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.admission import Admission
from bridge.callmodel import CallInfo
from bridge.leg import AudioLeg, EndedBy, LegEnded
from bridge.supervisor import CallSupervisor


class _Leg:
    """The owner's side of a leg: ends once, reports its LegEnded."""

    def __init__(self) -> None:
        self._ended: asyncio.Future[LegEnded] = asyncio.get_running_loop().create_future()

    def end(self, reason: str, by: EndedBy = "peer") -> None:
        if not self._ended.done():
            self._ended.set_result(LegEnded(reason, 0.0, by))

    async def finished(self) -> LegEnded:
        return await asyncio.shield(self._ended)

    async def close(self, reason: str = "closed") -> None:
        self.end(reason)


class _Call:
    transport = "sip"
    transferred_grace_s = 1.0
    transferred = False

    async def end(self, ended: LegEnded) -> None:
        return None

    def summary(self) -> dict[str, Any]:
        return {}


async def _idle_agent(leg: AudioLeg, info: CallInfo) -> None:
    await asyncio.sleep(3600)


async def test_calls_sharing_a_call_id_are_supervised_apart() -> None:
    sup = CallSupervisor(_idle_agent, Admission(10))
    info = CallInfo(call_id="same@host", from_uri="", to_uri="", source=("127.0.0.1", 5060))
    legs = [_Leg(), _Leg()]
    calls = []
    for tag, leg in zip(("a", "b"), legs, strict=True):
        assert sup.take()
        calls.append(sup.supervise(_Call(), leg, info, key=f"same@host;{tag}"))  # type: ignore[arg-type]
    assert sup.active("sip") == 2 and sup.admission.active == 2
    calls[0].peer_ended("bye")
    await asyncio.wait_for(calls[0].wait(), 10)
    assert sup.get("sip", "same@host;b") is calls[1]  # the other call is still known
    assert sup.active("sip") == 1 and sup.admission.active == 1  # one slot freed, once
    with pytest.raises(RuntimeError):
        sup.supervise(_Call(), _Leg(), info, key="same@host;b")  # type: ignore[arg-type]
    calls[1].peer_ended("bye")
    await asyncio.wait_for(calls[1].wait(), 10)
    assert sup.active() == 0 and sup.admission.active == 0
