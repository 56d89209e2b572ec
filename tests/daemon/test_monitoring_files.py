"""deploy/prometheus alert rules and the deploy/grafana dashboard only use metrics (and labels)
the daemon exports, and have the shape Prometheus and Grafana load (promtool too, when
installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Metric

import bridge.metrics as metrics_module
from bridge.metrics import REGISTRY

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "voice-bridge-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "voice-bridge-dashboard.json"
SCRAPE_LABELS = {"job", "instance", "le", "__name__"}  # added by Prometheus or histograms
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ("",), "summary": ("", "_sum", "_count")}


def _exported() -> dict[str, set[str]]:
    """Every series name the daemon can export -> its label names."""
    labels_of: dict[str, set[str]] = {}
    for obj in vars(metrics_module).values():
        names = getattr(obj, "_labelnames", None)
        name = getattr(obj, "_name", None)
        if names is not None and name is not None:
            labels_of[name] = set(names)
    out: dict[str, set[str]] = {"up": set()}
    family: Metric
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            out[family.name + suffix] = labels_of.get(family.name, set()) | {"le"}
    return out


def _selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, labels matched) for each series a PromQL expression reads."""
    found = []
    for m in re.finditer(r"\b((?:voice_bridge|process)_[a-z_]+|up)\b(\{([^}]*)\})?", expr):
        labels = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", m.group(3) or ""))
        found.append((m.group(1), labels))
    return found


def _by_labels(expr: str) -> set[str]:
    return {label.strip() for group in re.findall(r"\bby\s*\(([^)]*)\)", expr) for label in group.split(",")}


def _check_expr(expr: str, exported: dict[str, set[str]]) -> None:
    selectors = _selectors(expr)
    assert selectors, f"no voice-bridge metric in {expr!r}"
    known_labels = set(SCRAPE_LABELS)
    for name, labels in selectors:
        assert name in exported, f"{name} is not exported by the daemon ({expr!r})"
        assert labels <= exported[name] | SCRAPE_LABELS, f"{name} has no label {labels - exported[name]}"
        known_labels |= exported[name]
    assert _by_labels(expr) <= known_labels, f"grouping by an unknown label in {expr!r}"


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_use_exported_metrics() -> None:
    exported = _exported()
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) and len(rules) >= 8
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
        _check_expr(rule["expr"], exported)
    covered = " ".join(r["expr"] for r in rules)
    for name in ("voice_bridge_event_loop_lag_recent_seconds", "voice_bridge_shedding",
                 "voice_bridge_calls_total", "voice_bridge_turn_latency_seconds_bucket",
                 "voice_bridge_provider_healthy", "voice_bridge_process_cpu_ratio"):
        assert name in covered, name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed")
def test_promtool_accepts_the_rules() -> None:
    cmd = ["promtool", "check", "rules", str(RULES)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_panels_use_exported_metrics() -> None:
    exported = _exported()
    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            _check_expr(target["expr"], exported)
    text = " ".join(t["expr"] for p in panels for t in p["targets"])
    # what an operator watches: calls, failures by reason, voice-to-voice, barge-ins, providers, loop lag
    for name in ("voice_bridge_calls_active", "voice_bridge_calls_refused_total",
                 "voice_bridge_provider_failures_total", 'mark="first_audio_out"',
                 "voice_bridge_barge_ins_total",
                 "voice_bridge_provider_healthy", "voice_bridge_event_loop_lag_seconds_bucket",
                 "voice_bridge_process_cpu_ratio", "process_resident_memory_bytes"):
        assert name in text, name
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "job"}


def test_checker_catches_an_unknown_metric_or_label() -> None:
    exported = _exported()
    with pytest.raises(AssertionError):
        _check_expr("rate(voice_bridge_no_such_thing_total[5m])", exported)
    with pytest.raises(AssertionError):
        _check_expr('voice_bridge_calls_active{outcome="bye"}', exported)
    with pytest.raises(AssertionError):
        _check_expr("sum by (callee) (voice_bridge_calls_active)", exported)
