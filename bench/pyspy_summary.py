"""Summarise a py-spy raw profile (``py-spy record -f raw``): the functions with the most
samples on top of the stack (self) and the share of samples under given path fragments.

    .venv/bin/py-spy record -r 50 --nonblocking -f raw -o prof.raw -- \\
        .venv/bin/python bench/voice_to_voice.py --calls 60 --turns 2 --tts elevenlabs-ws
    .venv/bin/python bench/pyspy_summary.py prof.raw --top 20 --under silero_shared.py websockets/

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int, fragments: list[str], only: list[str] | None = None,
              skip: list[str] | None = None) -> dict[str, object]:
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if only and not any(frag in stack for frag in only):
            continue  # e.g. --only _run_once: the event loop's work, not the imports
        if skip and any(frag in stack for frag in skip):
            continue  # e.g. --skip build_providers: not the set-up before the calls
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frag in fragments:
            if frag in stack:
                under[frag] += n
    pct = 100.0 / total if total else 0.0
    return {
        "samples": total,
        "self_pct": {f: round(n * pct, 1) for f, n in own.most_common(top)},
        "under_pct": {f: round(under[f] * pct, 1) for f in fragments},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--under", nargs="*", default=[])
    ap.add_argument("--only", nargs="*", default=[],
                    help="count only the samples whose stack contains one of these fragments")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="leave out the samples whose stack contains one of these fragments")
    args = ap.parse_args()
    print(json.dumps(summarise(args.raw, args.top, args.under, args.only, args.skip), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
