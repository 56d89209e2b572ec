"""The echo agent: sends the caller's audio back, frame for frame, until the call ends."""

from __future__ import annotations

import asyncio

from bridge.leg import AudioFrame, AudioLeg, LegEnded, LegEvent

UTTERANCE_ID = "echo"


async def run_echo(leg: AudioLeg) -> None:
    """Each 20 ms caller frame is queued for playback as it arrives (one open utterance), so
    the caller hears themselves one jitter-buffer depth plus one frame later. The frames come
    to a plain function in the leg's own tick (AudioLeg.consume): no task woken per frame."""
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(event: LegEvent) -> None:
        if isinstance(event, AudioFrame):
            leg.play(UTTERANCE_ID, event.pcm)
        elif isinstance(event, LegEnded) and not ended.done():
            ended.set_result(None)

    feed = leg.consume(on_event)
    try:
        feed.release()
        await ended
    finally:
        feed.detach()
