"""The echo agent: sends the caller's audio back, frame for frame, until the call ends."""

from __future__ import annotations

from bridge.leg import AudioFrame, AudioLeg, LegEnded

UTTERANCE_ID = "echo"


async def run_echo(leg: AudioLeg) -> None:
    """Each 20 ms caller frame is queued for playback as it arrives (one open utterance), so
    the caller hears themselves one jitter-buffer depth plus one frame later."""
    async for event in leg.events():
        if isinstance(event, AudioFrame):
            leg.play(UTTERANCE_ID, event.pcm)
        elif isinstance(event, LegEnded):
            return
