"""What `voice-bridge demo` and `voice-bridge simulate-call` run: the Plivo simulator
(`plivo/`), SIPp caller scenarios with their RTP pcaps, and the daemon runner.

Installed with the package because those commands are. The daemon's packages never import it
(an import contract); test-only tools live in the checkout's `devkit/`, outside the wheel.
"""
