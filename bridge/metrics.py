"""Prometheus metrics shared by every area of the daemon (one registry per process).

Labels never carry phone numbers or call ids (DPDPA, and unbounded cardinality).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
# process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
ProcessCollector(registry=REGISTRY)

CALLS_ACTIVE = Gauge("voice_bridge_calls_active", "Calls in progress", ["transport"], registry=REGISTRY)
CALLS_TOTAL = Counter(
    "voice_bridge_calls_total", "Calls ended, by outcome", ["transport", "outcome"], registry=REGISTRY
)
SIP_RESPONSES = Counter(
    "voice_bridge_sip_responses_total", "SIP responses sent, by method and code", ["method", "code"],
    registry=REGISTRY,
)
SIP_REQUESTS = Counter(
    "voice_bridge_sip_requests_total", "SIP requests received, by method", ["method"], registry=REGISTRY
)
SIP_DROPPED = Counter(
    "voice_bridge_sip_dropped_total", "SIP datagrams/messages dropped, by reason", ["reason"],
    registry=REGISTRY,
)
SIP_SEND_FAILURES = Counter(
    "voice_bridge_sip_send_failures_total",
    "SIP messages of ours that could not be sent (e.g. no TCP connection to the next hop), by method",
    ["method", "transport"], registry=REGISTRY,
)
REGISTRATION_STATE = Gauge(
    "voice_bridge_registration_registered", "1 when registered to the SIP registrar", registry=REGISTRY
)
RTP_PACKETS = Counter(
    "voice_bridge_rtp_packets_total", "RTP packets, by direction (in/out)", ["direction"], registry=REGISTRY
)
RTP_REJECTED = Counter(
    "voice_bridge_rtp_rejected_total",
    "RTP packets refused, by reason (foreign-source: not the caller's latched/SDP address)",
    ["reason"], registry=REGISTRY,
)
DTMF_EVENTS = Counter(
    "voice_bridge_dtmf_events_total", "DTMF digits, by direction (in/out) and method (rfc4733, sip-info)",
    ["direction", "method"], registry=REGISTRY,
)
DTMF_PER_CALL = Histogram(
    "voice_bridge_dtmf_digits_per_call", "DTMF digits received per call, observed when the call ends",
    buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY,
)
RTP_LOST = Counter("voice_bridge_rtp_lost_total", "RTP packets lost on receive", registry=REGISTRY)
# How the shared 20 ms media clock kept time, in group ticks (one per group of legs in use each
# 20 ms, whatever the group's size): 'on_time' (its wake-up less than a period after its
# deadline), 'late' (every tick of a later wake-up: the missed ones caught up back to back, and
# the one tick of a restart), 'skipped' (dropped by a restart after a long stall). late + skipped
# against on_time is the pacing the event loop allowed.
MEDIA_CLOCK_TICKS = Counter(
    "voice_bridge_media_clock_ticks_total", "Media clock ticks, by timeliness", ["kind"], registry=REGISTRY
)
# How late the clock woke for a group's deadline, one sample per group wake-up (not weighted by
# the group's size): the outgoing RTP interval of every call of that group is off by this much
# (the packets of one group tick leave back to back right after it).
MEDIA_CLOCK_LATENESS = Histogram(
    "voice_bridge_media_clock_lateness_seconds", "Media clock wake-up after its deadline",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5), registry=REGISTRY,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
TURN_LATENCY = Histogram(
    "voice_bridge_turn_latency_seconds",
    "Per-turn latency from user_speech_end to each mark (stt_final, llm_first_token, "
    "tts_first_byte, first_audio_out) and the bridge overhead",
    ["mark"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BARGE_INS = Counter("voice_bridge_barge_ins_total", "Agent replies cut off by the caller", registry=REGISTRY)
FALSE_INTERRUPTIONS = Counter(
    "voice_bridge_false_interruptions_total",
    "Agent audio paused on caller sound that was not a barge-in, then resumed", registry=REGISTRY,
)
STT_LATE_FINALS = Counter(
    "voice_bridge_stt_late_finals_total",
    "STT ends of utterance that came after their turn stopped waiting (stt_final_timeout_s), "
    "recorded as stt_late_final and kept out of the caller's next turn", registry=REGISTRY,
)
PREEMPTIONS = Counter(
    "voice_bridge_preemptive_replies_total",
    "Replies started before the turn was confirmed, by outcome (confirmed, changed, resumed, dropped)",
    ["outcome"], registry=REGISTRY,
)
PROVIDER_HEALTHY = Gauge(
    "voice_bridge_provider_healthy", "1 when the provider's last use succeeded", ["kind", "provider"],
    registry=REGISTRY,
)
PROVIDER_FAILURES = Counter(
    "voice_bridge_provider_failures_total", "Provider failures, by kind, provider and reason",
    ["kind", "provider", "reason"], registry=REGISTRY,
)
OUTBOUND_DECISIONS = Counter(
    "voice_bridge_outbound_decisions_total",
    "Outbound compliance decisions and placements: decision (allowed/refused/placed/...), rule",
    ["via", "decision", "rule"], registry=REGISTRY,
)
CALLS_REFUSED = Counter(
    "voice_bridge_calls_refused_total",
    "New calls and streams refused with 503, by reason (draining, at capacity, overloaded)",
    ["transport", "reason"], registry=REGISTRY,
)
LOOP_LAG = Histogram(
    "voice_bridge_event_loop_lag_seconds", "How late a 50 ms timer on the event loop fires",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), registry=REGISTRY,
)
LOOP_LAG_RECENT = Gauge(
    "voice_bridge_event_loop_lag_recent_seconds", "Mean event-loop lag over the last second",
    registry=REGISTRY,
)
PROCESS_CPU_RATIO = Gauge(
    "voice_bridge_process_cpu_ratio", "This process's CPU time per wall second, last second (1 = a core)",
    registry=REGISTRY,
)
SHEDDING = Gauge(
    "voice_bridge_shedding", "1 while new calls are refused because the event loop is late",
    registry=REGISTRY,
)
