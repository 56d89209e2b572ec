"""[media] RTP settings."""

from __future__ import annotations

from pydantic import Field, model_validator

from bridge.settings.base import Section


class MediaSettings(Section):
    rtp_port_min: int = Field(10000, ge=1024, le=65534)
    rtp_port_max: int = Field(20000, ge=1025, le=65535)
    # RFC 4733 telephone-event payload type we offer (answers mirror the offer's).
    dtmf_payload_type: int = Field(101, ge=96, le=127)
    jitter_buffer_ms: int = Field(60, ge=0, le=500)
    # No RTP from the caller for this long: the call is dead, send BYE.
    rtp_timeout_s: float = Field(30.0, gt=0)
    # Save each call's audio as a stereo WAV here (left caller, right agent); empty = none.
    recordings_dir: str = ""
    # Send to where the caller's RTP really comes from (NAT), not only to the SDP address:
    # the first source from the SDP's IP (or the SIP signalling source's IP) within
    # rtp_latch_window_s of the answer is followed, once; later sources are refused until a
    # re-INVITE names a new address. Off: only the exact SDP address is accepted.
    symmetric_rtp: bool = True
    # How long after the answer (or a re-INVITE) symmetric RTP may latch onto a NAT source.
    rtp_latch_window_s: float = Field(5.0, gt=0, le=60)
    # Send G.711 silence while the agent is quiet (for SBCs that time out one-way RTP);
    # off = packets pause between utterances (timestamps keep running, marker bit on resume).
    send_silence: bool = False

    @model_validator(mode="after")
    def _range(self) -> MediaSettings:
        if self.rtp_port_max - self.rtp_port_min < 2:
            raise ValueError("rtp_port_max must be at least rtp_port_min + 2")
        return self
