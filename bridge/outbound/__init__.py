"""Placing outbound calls lawfully in India: number normalisation, NDNC/DND scrub, calling
windows, caller-ID registration, consent/opt-out, audit, campaigns, and the dialers (Plivo REST).

Every path to a dialer goes through :class:`bridge.outbound.service.OutboundService`, which runs
the compliance gate first; there is no bypass.
"""
