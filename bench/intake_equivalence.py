"""Randomized old-vs-new check of the receive buffers (rx_timeline, jitter_buffer,
listen_buffer) and the receive statistics (rx_stats): the same random packet streams into this
checkout's and another's, compared after every step; prints JSON, exit status 1 on the first
difference.

    .venv/bin/python bench/intake_equivalence.py --tree /tmp/main [--runs 600] [--steps 3000]

For a change meant to keep behaviour identical (a fast path, a restructure). Compared: each
delivered frame (its bytes, and which input object it is: codec.Passthrough finds frames by
identity), and the buffers' and statistics' whole state (every attribute, the concealer's and
the current stream's too) after each step. The streams mix the usual in-order 20 ms packets
with losses, reordering, duplicates, replayed blocks, timestamp jumps both ways, sequence
restarts, 16/32-bit wraps, other and overlapping packet sizes, packets without a sequence
number, resets (a new SSRC) and silent stretches.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import types
from pathlib import Path
from typing import Any

_MODULES = ("plc", "rx_timeline", "jitter_buffer", "listen_buffer", "rx_stats")


def load(tree: Path, prefix: str) -> dict[str, types.ModuleType]:
    """The tree's buffer modules under private names (both trees live in one process)."""
    mods: dict[str, types.ModuleType] = {}
    for name in _MODULES:
        source = (tree / "bridge" / "media" / f"{name}.py").read_text()
        for dep in _MODULES:
            source = source.replace(f"bridge.media.{dep} ", f"{prefix}{dep} ")
        mod = types.ModuleType(prefix + name)
        mod.__file__ = str(tree / "bridge" / "media" / f"{name}.py")
        sys.modules[prefix + name] = mod
        exec(compile(source, mod.__file__, "exec"), mod.__dict__)  # our own checkout
        mods[name] = mod
    return mods


def same(a: Any, b: Any) -> list[str]:
    """The attributes whose values differ (attributes only one side has are constants a change
    added or dropped, not state: not compared)."""
    sa, sb = state(a), state(b)
    return sorted(k for k in sa.keys() & sb.keys() if sa[k] != sb[k])


def state(buf: Any) -> dict[str, Any]:
    out = {}
    for key, value in vars(buf).items():
        if key == "_concealer":
            value = dict(vars(value))
        elif key == "_stream":
            value = None if value is None else {k: getattr(value, k) for k in value.__slots__}
        elif isinstance(value, list):
            value = list(value)
        elif isinstance(value, dict):
            value = dict(value)
        out[key] = value
    return out


class Sender:
    """A random RTP sender: mostly in-order 20 ms packets, with every kind of trouble."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seq = rng.choice([rng.getrandbits(16), 65_500 + rng.randrange(36)])
        self.ts = rng.choice([rng.getrandbits(32), (1 << 32) - rng.randrange(1, 4000)])
        self.sent: list[tuple[int, int, int]] = []  # (ts, seq, samples) for replays
        self.held: list[tuple[int, int, int]] = []  # reordered: sent later

    def next(self) -> list[tuple[int, int | None, int]]:
        """The packets that arrive now: (timestamp, seq or None, samples)."""
        rng = self.rng
        r = rng.random()
        if r < 0.01:
            self.ts = (self.ts + rng.choice([8000, 16000, 24000, 100_000])) & 0xFFFFFFFF  # talkspurt
        elif r < 0.015:
            self.ts = (self.ts - rng.choice([160, 800, 8000, 40_000])) & 0xFFFFFFFF  # moved back
        elif r < 0.018:
            self.seq = rng.getrandbits(16)  # numbering restarted
        elif r < 0.022:
            self.ts = (self.ts + rng.choice([160, 320, 480])) & 0xFFFFFFFF  # a small gap
        samples = 160 if rng.random() < 0.9 else rng.choice([0, 80, 240, 320, 1])
        pkt = (self.ts, self.seq, samples)
        step = max(samples, 1)
        if rng.random() < 0.01:
            step = max(1, samples - rng.choice([1, 80, 160]))  # overlapping packets
        self.ts = (self.ts + step) & 0xFFFFFFFF
        self.seq = (self.seq + 1) & 0xFFFF
        self.sent.append(pkt)
        del self.sent[:-400]
        out: list[tuple[int, int | None, int]] = []
        r = rng.random()
        if r < 0.03:
            pass  # lost
        elif r < 0.06:
            self.held.append(pkt)  # reordered behind the next ones
        else:
            out.append(pkt)
        if self.held and rng.random() < 0.4:
            out.append(self.held.pop(0))
        if rng.random() < 0.01:
            out.append(pkt)  # duplicate
        if rng.random() < 0.004 and len(self.sent) > 12:  # a replayed block
            start = rng.randrange(len(self.sent) - 10)
            out.extend(self.sent[start : start + rng.randrange(3, 10)])
        if rng.random() < 0.02:
            out = [(ts, None, n) for ts, _, n in out]
        return [(ts, seq, n) for ts, seq, n in out]


def run(old: dict[str, types.ModuleType], new: dict[str, types.ModuleType], seed: int,
        steps: int) -> str | None:
    rng = random.Random(seed)
    listen = rng.random() < 0.5
    if listen:
        kw = {"max_wait_ms": rng.choice([0, 20, 40, 60, 100]), "max_conceal_ms": rng.choice([20, 60, 100])}
        a, b = old["listen_buffer"].ListenBuffer(**kw), new["listen_buffer"].ListenBuffer(**kw)
    else:
        kw = {"target_ms": rng.choice([0, 20, 40, 60, 100]), "max_conceal_ms": rng.choice([20, 60, 100])}
        a, b = old["jitter_buffer"].PlayoutBuffer(**kw), new["jitter_buffer"].PlayoutBuffer(**kw)
    sender = Sender(rng)
    ra, rb = old["rx_stats"].ReceiveStats(), new["rx_stats"].ReceiveStats()
    ssrc = rng.getrandbits(32)
    inputs: dict[int, int] = {}  # id of each pcm object handed in -> its number
    keep: list[bytes] = []
    silent = 0
    for step in range(steps):
        r = rng.random()
        if r < 0.002:
            a.reset()
            b.reset()
            sender = Sender(rng)
            ssrc = rng.choice([ssrc, rng.getrandbits(32)])
        if silent:
            silent -= 1
        elif rng.random() < 0.003:
            silent = rng.randrange(2, 120)  # the sender pauses (hold, DTMF, suppression)
        else:
            for ts, seq, samples in sender.next():
                pcm = rng.randbytes(2 * samples + (rng.random() < 0.01))
                inputs[id(pcm)] = len(keep)
                keep.append(pcm)
                a.put(ts, pcm, seq)
                b.put(ts, pcm, seq)
                arrival = step * 0.02 + rng.random() * 0.05
                number = rng.getrandbits(16) if seq is None else seq
                ra.on_packet(ssrc, number, ts, arrival)
                rb.on_packet(ssrc, number, ts, arrival)
        if rng.random() < 0.97:  # the clock ticks (now and then a tick is skipped: a burst)
            fa = a.frames() if listen else [f for f in [a.tick()] if f is not None]
            fb = b.frames() if listen else [f for f in [b.tick()] if f is not None]
            if fa != fb or [inputs.get(id(f)) for f in fa] != [inputs.get(id(f)) for f in fb]:
                return f"seed {seed} step {step}: frames differ"
        diff = same(ra, rb)
        if diff:
            return f"seed {seed} step {step}: receive stats differ in {diff}"
        diff = same(a, b)
        if diff:
            return f"seed {seed} step {step}: state differs in {diff}"
        if len(keep) > 2000:  # the ids of dropped objects may be reused: keep them alive a while
            del keep[:1000]
            inputs = {id(p): i for i, p in enumerate(keep)}
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, required=True, help="the checkout to compare with (e.g. main)")
    ap.add_argument("--runs", type=int, default=600)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    old, new = load(args.tree.resolve(), "_old_"), load(here, "_new_")
    for i in range(args.runs):
        problem = run(old, new, args.seed + i, args.steps)
        if problem:
            print(json.dumps({"equal": False, "runs": i + 1, "problem": problem}))
            return 1
    print(json.dumps({"equal": True, "runs": args.runs, "steps": args.steps, "tree": str(args.tree)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
