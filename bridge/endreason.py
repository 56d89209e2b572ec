"""Why a call ended: one bounded vocabulary for both transports, used as the calls metric's
``outcome`` label and in transcripts (DESIGN.md, "Call lifecycle").

Legs, SIP and the engine keep their own words for the log (``rtp-timeout``, ``socket
closed``); ``end_reason`` maps any of them to one of these, unknown words to OTHER, so the
metric's cardinality stays fixed.
"""

from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    BYE = "bye"  # the caller's side ended it (SIP BYE, Plivo closed or stopped the stream)
    CANCEL = "cancel"  # the caller gave up before the answer
    ACK_TIMEOUT = "ack-timeout"
    MEDIA_TIMEOUT = "media-timeout"  # no audio from the caller for too long (RTP or stream)
    AGENT_FINISHED = "agent-finished"  # the agent returned: we hung up
    AGENT_ENDED = "agent-ended"  # the conversation's own end (end_call tool, script)
    TRANSFERRED = "transferred"
    SILENCE = "silence"
    MAX_DURATION = "max-duration"
    PROVIDER_FAILURE = "provider-failure"
    DRAIN = "drain"  # still up when the drain time ran out
    SHUTDOWN = "shutdown"
    ERROR = "error"
    PROTOCOL_ERROR = "protocol-error"  # the peer kept sending what we cannot parse
    DROPPED = "dropped"  # the stream's socket died without a close frame (Plivo's DroppedStream)
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    NORMAL = "normal"
    OTHER = "other"


_ALIASES = {
    "socket closed": EndReason.BYE,
    "stop": EndReason.BYE,
    "caller-hangup": EndReason.BYE,
    "closed": EndReason.BYE,
    "agent finished": EndReason.AGENT_FINISHED,
    "hangup": EndReason.AGENT_FINISHED,  # the stream leg ended by our side
    "rtp-timeout": EndReason.MEDIA_TIMEOUT,
    "media timeout": EndReason.MEDIA_TIMEOUT,
    "protocol errors": EndReason.PROTOCOL_ERROR,
    "message too big": EndReason.PROTOCOL_ERROR,
}


def end_reason(raw: str) -> EndReason:
    """Any transport's or agent's word for why a call ended -> the shared vocabulary."""
    alias = _ALIASES.get(raw)
    if alias is not None:
        return alias
    try:
        return EndReason(raw)
    except ValueError:
        return EndReason.OTHER
