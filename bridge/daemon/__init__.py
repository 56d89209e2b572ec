"""The long-running daemon: SIP user agent + RTP legs + agents + HTTP health/metrics."""
