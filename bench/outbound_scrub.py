"""Benchmark the NDNC/DND scrub: import a 1M-number registry, then lookups per second.

Prints one JSON object: import rate, registry size on disk, lookups/s for the raw registry
lookup and for the whole compliance check (normalise + opt-out + DND + window), and memory.
Usage: .venv/bin/python bench/outbound_scrub.py [--numbers 1000000] [--lookups 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.outbound.compliance import ComplianceGate
from bridge.outbound.numbers import normalise_fast
from bridge.outbound.registry import DndRegistry, ImportReport, read_scrub_rows
from bridge.outbound.store import OutboundStore
from bridge.settings.outbound import ComplianceSettings


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(7)
    listed = rng.sample(range(6_000_000_000, 9_999_999_999), args.numbers)

    with tempfile.TemporaryDirectory() as tmp:
        scrub = Path(tmp) / "scrub.csv"
        with open(scrub, "w") as fh:  # a realistic scrub file: national format, some preferences
            fh.write("number,allowed_categories\n")
            for i, n in enumerate(listed):
                fh.write(f"{n},{'1|3' if i % 10 == 0 else ''}\n")
        registry = DndRegistry.open(tmp)
        rss_before = rss_mib()
        t0 = time.perf_counter()
        report = registry.import_file(scrub)
        import_s = time.perf_counter() - t0
        assert report.imported == args.numbers, report

        hits = [f"+91{n}" for n in rng.sample(listed, args.lookups // 2)]
        misses = [f"+91{n}" for n in rng.sample(range(6_000_000_000, 9_999_999_999), args.lookups // 2)]
        probes = hits + misses
        rng.shuffle(probes)
        t0 = time.perf_counter()
        found = sum(registry.lookup(p) is not None for p in probes)
        lookup_s = time.perf_counter() - t0

        store = OutboundStore.open(tmp)
        # The scrub is measured: consent and caller-ID series (on by default) would refuse all.
        settings = ComplianceSettings.model_validate(
            {"registered_caller_ids": ["+911140000000"], "consent_required": [], "caller_id_series": {}})
        now = datetime(2025, 1, 6, 10, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
        gate = ComplianceGate(settings, registry, store, lambda: now)
        subset = probes[: min(len(probes), 50_000)]
        t0 = time.perf_counter()
        refused = sum(not gate.check(p, "+911140000000").allowed for p in subset)
        check_s = time.perf_counter() - t0

        raw = [str(n) for n in listed[:100_000]]
        t0 = time.perf_counter()
        for r in raw:
            normalise_fast(r)
        fast_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(read_scrub_rows((f"+1 415 555 {i % 10000:04d}\n" for i in range(20_000)), "IN", ImportReport()))
        slow_s = time.perf_counter() - t0

        db_bytes = sum(p.stat().st_size for p in (Path(tmp) / "outbound").glob("dnd-registry.sqlite*"))
        out = {
            "registry_numbers": registry.count(),
            "import_s": round(import_s, 2),
            "import_numbers_per_s": round(args.numbers / import_s),
            "registry_file_mib": round(db_bytes / 2**20, 1),
            "lookups": len(probes),
            "lookup_hits": found,
            "registry_lookups_per_s": round(len(probes) / lookup_s),
            "registry_lookup_us": round(lookup_s / len(probes) * 1e6, 2),
            "compliance_checks": len(subset),
            "compliance_refused": refused,
            "compliance_checks_per_s": round(len(subset) / check_s),
            "normalise_fast_per_s": round(len(raw) / fast_s),
            "normalise_phonenumbers_per_s": round(20_000 / slow_s),
            "rss_mib": round(rss_mib(), 1),
            "rss_growth_during_import_mib": round(rss_mib() - rss_before, 1),
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "cpu_count": os.cpu_count(),
        }
        store.close()
        registry.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
