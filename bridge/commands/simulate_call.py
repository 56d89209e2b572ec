"""`voice-bridge simulate-call`: act as Plivo for one inbound call, with no Plivo account.

Signs and POSTs the answer webhook, follows the XML (<Stream>: Plivo's WebSocket protocol;
<Dial><User>: a SIP call with SIPp), plays the caller's audio, records what the caller heard,
then posts the hangup callback. Prints the call as it happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

HELP = "simulate an inbound Plivo call against an answer URL (stream or SIP), recording the agent"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--answer-url", required=True, metavar="URL", help="the XML server's answer URL")
    parser.add_argument("--from", dest="from_number", default="+919876543210", metavar="N",
                        help="caller number (default +919876543210)")
    parser.add_argument("--to", dest="to_number", default="918035735100", metavar="N", help="called number")
    parser.add_argument("--audio", metavar="WAV", help="caller audio (any WAV; resampled to 8 kHz mono)")
    parser.add_argument("--record", metavar="WAV", help="write what the caller heard here (stream calls)")
    parser.add_argument("--method", choices=("POST", "GET"), default="POST")
    parser.add_argument("--hangup-url", default="", metavar="URL", help="default: <answer base>/hangup")
    parser.add_argument("--tail", type=float, default=3.0, metavar="S",
                        help="seconds the caller stays on after the audio (default 3)")
    parser.add_argument("--max-seconds", type=float, default=120.0, metavar="S")
    parser.add_argument("--unsigned", action="store_true",
                        help="send no signature even if PLIVO_AUTH_TOKEN is set")
    parser.add_argument("--latency-ms", default="40-150", metavar="MIN-MAX",
                        help="one-way stream delay, drawn once per call from this range (default 40-150)")
    parser.add_argument("--jitter-ms", type=float, default=20.0, metavar="MS",
                        help="extra random delay per stream message (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the network delays (default 1)")
    parser.add_argument("--trusted-source", action="store_true",
                        help="place the SIP leg from 127.0.0.1 (which the daemon trusts by default) "
                             "instead of 127.0.0.2, which must answer the digest challenge with the "
                             "<User>'s sipAuthUsername/sipAuthPassword, as Plivo does")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")


def run(args: argparse.Namespace) -> int:
    from bridge.audio.wavfile import WavError, read_wav_8k_mono, write_wav
    from bridge.simulator.plivo.network import NetworkProfile
    from bridge.simulator.plivo.simulator import CallSpec, simulate_call

    token = None if args.unsigned else os.environ.get("PLIVO_AUTH_TOKEN") or None
    if token is None and not args.unsigned:
        print("note: PLIVO_AUTH_TOKEN not set: webhooks go unsigned", file=sys.stderr)
    try:
        pcm = read_wav_8k_mono(args.audio) if args.audio else b""
    except WavError as exc:
        print(f"simulate-call: cannot read {args.audio}: {exc}", file=sys.stderr)
        return 2
    try:
        low, _, high = args.latency_ms.partition("-")
        network = NetworkProfile(float(low), float(high or low), args.jitter_ms, args.seed)
    except ValueError:
        print(f"simulate-call: --latency-ms wants MIN-MAX in ms, got {args.latency_ms!r}", file=sys.stderr)
        return 2
    spec = CallSpec(
        answer_url=args.answer_url,
        from_number=args.from_number,
        to_number=args.to_number,
        caller_pcm=pcm,
        auth_token=token,
        method=args.method,
        hangup_url=args.hangup_url,
        tail_s=args.tail,
        max_s=args.max_seconds,
        network=network,
        trusted_source=args.trusted_source,
    )
    call = asyncio.run(simulate_call(spec, printer=lambda line: print(line, flush=True)))
    if args.record and call.stream is not None:
        write_wav(args.record, call.stream.heard)
        print(f"recorded what the caller heard: {args.record}")
    if args.json:
        summary = {
            "call_uuid": call.call_uuid,
            "ok": call.ok,
            "error": call.error,
            "answer_status": call.answer.status if call.answer else None,
            "plan": type(call.plan).__name__ if call.plan else None,
            "agent_audio_ms": call.stream.agent_audio_ms if call.stream else None,
            "first_audio_ms": (call.stream.first_audio_tick * 20
                               if call.stream and call.stream.first_audio_tick is not None else None),
            "clears": call.stream.clears if call.stream else None,
            "sip_answered": call.sip_answered,
            "sip_challenged": call.sip_challenged,
            "sip_refused": call.sip_refused,
            "stream_events": call.stream_events,
            "network_rtt_ms": call.stream.network_rtt_ms if call.stream else None,
        }
        print(json.dumps(summary))
    return 0 if call.ok else 1
