"""Suite-wide test settings: no telemetry from ONNX Runtime, loopback only."""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
