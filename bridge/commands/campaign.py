"""`voice-bridge campaign`: dial a CSV list with pacing, retries and resumable state."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from bridge import event_loop
from bridge.outbound.campaign import CallerIdRefused, CampaignOptions, CampaignRunner, CampaignSummary
from bridge.outbound.campaign_lock import CampaignBusy, CampaignLock
from bridge.outbound.campaign_store import CampaignFileError, LoadReport, campaign_name
from bridge.outbound.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    default_caller_id,
    nested_config_option,
    settings_for,
)
from bridge.outbound.db import outbound_dir
from bridge.outbound.dialer_clock import SystemClock
from bridge.outbound.wiring import open_outbound
from bridge.settings import Settings

HELP = "run a calling campaign (a named list of people) from a CSV, resumable; or show its status/results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="campaign_command", required=True)
    p = sub.add_parser("run", help="dial FILE.csv (run it again, edited or not, to resume: nobody is "
                                   "called twice; new numbers are added)")
    nested_config_option(p)
    p.add_argument("file", type=Path)
    p.add_argument("--name", default="", help="campaign name (default: the file name without .csv)")
    p.add_argument("--force", action="store_true",
                   help="also dial people another campaign contacted within outbound.recontact_window_days")
    p.add_argument("--via", choices=["plivo-api", "sip-trunk"], help="default: outbound.via")
    p.add_argument("--from", dest="from_", metavar="NUMBER", help="registered caller ID")
    p.add_argument("--agent", default="", metavar="NAME")
    p.add_argument("--results", type=Path, help="result CSV (default: FILE.results.csv)")
    p.add_argument("--concurrency", type=int, help="default: outbound.concurrency")
    p.add_argument("--cps", type=float, help="calls per second (default: outbound.calls_per_second)")
    p = sub.add_parser("status", help="counts per state/outcome")
    nested_config_option(p)
    p.add_argument("name")
    p = sub.add_parser("results", help="write the result CSV (one row per input line, numbers masked)")
    nested_config_option(p)
    p.add_argument("name")
    p.add_argument("--out", type=Path, required=True)


def _print_load(report: LoadReport) -> None:
    verb = "created" if report.created else "resuming"
    print(f"campaign {report.name}: {verb}; {report.added} new, {report.known} already in it"
          f"{f', {report.invalid} invalid' if report.invalid else ''}"
          f"{f', {report.duplicate} duplicate' if report.duplicate else ''}")
    for problem in report.problems[:10]:
        print(f"  {problem}")


def _print_summary(summary: CampaignSummary) -> None:
    counts = " ".join(f"{k}={v}" for k, v in sorted(summary.counts.items()))
    print(f"campaign {summary.campaign_id}: dialed {summary.dialed} this run; {counts}")
    if summary.requeued:
        print(f"{summary.requeued} row(s) an interrupted run had not placed were queued again")
    if summary.reconciled:
        print(f"{summary.reconciled} row(s) an interrupted run placed were found at the provider "
              "(not redialed)")
    if summary.unreconciled:
        print(f"{summary.unreconciled} row(s) an interrupted run may have placed could not be checked with "
              "the provider; they are not dialed until a run can ask it")
    if summary.unknown:
        print(f"{summary.unknown} row(s) interrupted while placing were marked unknown (the provider cannot "
              "be asked or has no outcome; not redialed)")
    stale = summary.stale_live + summary.stale_settled + summary.stale_unknown + summary.stale_unchecked
    if stale:
        print(f"{stale} placed call(s) had no outcome after outcome_timeout_s and were looked up: "
              f"{summary.stale_settled} ended (outcome recorded, retry policy applied), "
              f"{summary.stale_live} still live (left), {summary.stale_unknown} unknown to the provider "
              f"(marked unknown, not redialed), {summary.stale_unchecked} not checked (provider unreachable; "
              "next run)")
    if summary.counts.get("skipped"):
        print("skipped: contacted by another campaign within outbound.recontact_window_days "
              "(--force dials them)")
    if summary.paused_reason:
        print(summary.paused_reason)
    elif summary.paused_until is not None:
        print(f"paused: outside the calling window; run again after {summary.paused_until.isoformat()}")
    elif summary.stopped:
        print("stopped on request; run the same command again to resume")


async def _run_with_signals(runner: CampaignRunner, campaign_id: str) -> CampaignSummary:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await runner.run(campaign_id, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    via = args.via or settings.outbound.via
    from_number = args.from_ or default_caller_id(settings)
    if not from_number:
        print("no caller ID: pass --from or set compliance.registered_caller_ids", file=sys.stderr)
        return EXIT_USAGE
    if not args.file.is_file():
        print(f"{args.file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    if (args.concurrency is not None and args.concurrency < 1) or (args.cps is not None and args.cps <= 0):
        print("--concurrency must be >= 1 and --cps > 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        name = campaign_name(args.file, args.name)
    except CampaignFileError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    lock = CampaignLock(outbound_dir(settings.daemon.data_dir), name)
    try:
        lock.acquire()
    except CampaignBusy as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run_locked(args, settings, via, from_number)
    finally:
        lock.release()


def _run_locked(args: argparse.Namespace, settings: Settings, via: str, from_number: str) -> int:
    out = settings.outbound
    outbound = open_outbound(settings, agent=args.agent)
    try:
        if via in outbound.unavailable:
            print(outbound.unavailable[via], file=sys.stderr)
            return EXIT_USAGE
        try:
            report = outbound.campaigns.load(args.file, settings.compliance.default_region, args.name)
        except CampaignFileError as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        _print_load(report)
        campaign_id = report.name
        options = CampaignOptions(
            from_number=from_number,
            concurrency=args.concurrency or out.concurrency,
            calls_per_second=args.cps or out.calls_per_second,
            max_attempts=out.max_attempts,
            retry_delay_s=out.retry_delay_s,
            retry_on=frozenset(out.retry_on),
            recontact_window_s=out.recontact_window_days * 86400.0,
            force=args.force,
            max_consecutive_failures=out.max_consecutive_failures,
            backoff_s=out.backoff_s,
            backoff_max_s=out.backoff_max_s,
            outcome_timeout_s=out.outcome_timeout_s,
        )
        runner = CampaignRunner(outbound.campaigns, outbound.service, outbound.service.dialer(via),
                                SystemClock(), options)
        try:
            summary = event_loop.run(_run_with_signals(runner, campaign_id), settings.daemon.event_loop)
        except CallerIdRefused as exc:
            print(f"campaign not started: {exc}", file=sys.stderr)
            return EXIT_USAGE
        results = args.results or args.file.with_suffix(".results.csv")
        outbound.campaigns.write_results(campaign_id, results)
        print(f"results: {results}")
    finally:
        outbound.close()
    _print_summary(summary)
    return EXIT_FAILED if summary.paused_reason or summary.counts.get("failed") else EXIT_OK


def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    settings = settings_for(args, settings)
    if settings is None:
        return EXIT_USAGE
    if args.campaign_command == "run":
        return _run(args, settings)
    outbound = open_outbound(settings, dialers={})
    try:
        if not outbound.campaigns.exists(args.name):
            print(f"no campaign named {args.name!r}", file=sys.stderr)
            return EXIT_USAGE
        if args.campaign_command == "status":
            counts = outbound.campaigns.counts(args.name)
            print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            reason = outbound.campaigns.pause_reason(args.name)
            if reason:
                print(reason)
        else:
            n = outbound.campaigns.write_results(args.name, args.out)
            print(f"wrote {n} rows to {args.out}")
    finally:
        outbound.close()
    return EXIT_OK
