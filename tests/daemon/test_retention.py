"""Transcripts and recordings past privacy.retention_days are deleted; others stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bridge.daemon.retention import retention_dirs, sweep
from bridge.settings import load_settings


def test_sweep_deletes_only_old_transcripts_and_recordings(tmp_path: Path) -> None:
    settings = load_settings(None, environ={}, overrides={
        "conversation": {"transcripts_dir": str(tmp_path / "t")},
        "media": {"recordings_dir": str(tmp_path / "r")},
        "privacy": {"retention_days": 30},
    })
    dirs = retention_dirs(settings)
    assert dirs == [tmp_path / "t", tmp_path / "r"]
    for d in dirs:
        d.mkdir()
    now = time.time()
    old_t, new_t = tmp_path / "t" / "old.jsonl", tmp_path / "t" / "new.jsonl"
    old_r, other = tmp_path / "r" / "old.wav", tmp_path / "r" / "notes.txt"
    for p in (old_t, new_t, old_r, other):
        p.write_text("x")
    for p in (old_t, old_r, other):
        os.utime(p, (now - 31 * 86400, now - 31 * 86400))
    os.utime(new_t, (now - 29 * 86400, now - 29 * 86400))

    assert sweep(dirs, 30 * 86400, now=now) == 2
    assert not old_t.exists() and not old_r.exists()
    assert new_t.exists()
    assert other.exists()  # not ours to delete
    assert sweep([tmp_path / "missing"], 1.0) == 0
