#!/usr/bin/env bash
# Set up, then run the main job: a live demo call against the daemon on the offline defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ORT_DISABLE_TELEMETRY=1
exec .venv/bin/voice-bridge demo "$@"
