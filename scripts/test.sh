#!/usr/bin/env bash
# Set up, then run every check CI runs: lint, types, layering contracts and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ORT_DISABLE_TELEMETRY=1
echo "== ruff";         .venv/bin/ruff check bridge xml_server devkit tests bench
echo "== mypy";         .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pytest"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
# pytest exits 5 when nothing ran: that is a failure here, never a pass.
if [ "$rc" -eq 5 ]; then echo "test.sh: no tests ran" >&2; exit 1; fi
exit "$rc"
