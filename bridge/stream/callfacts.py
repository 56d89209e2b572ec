"""Read the call facts Plivo hands back in a stream's start.extra_headers (the encoding and
the token are bridge.callfacts, shared with the XML server)."""

from __future__ import annotations

import json
import re

from bridge.callfacts import decode_value, fact_key


def parse_extra_headers(raw: object) -> dict[str, str]:
    """Plivo's start.extra_headers: "k1=v1;k2=v2" (the documented form), "k1=v1,k2=v2" (as
    configured), or a JSON object; values decoded. Anything else gives an empty dict (the token
    check then refuses the stream)."""
    pairs: dict[str, str] = {}
    if isinstance(raw, dict):
        items = [(str(k), str(v)) for k, v in raw.items()]
    elif isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                return {}
            return parse_extra_headers(obj) if isinstance(obj, dict) else {}
        items = []
        for part in re.split(r"[,;]", text):
            name, sep, value = part.partition("=")
            if sep:
                items.append((name.strip(), value.strip()))
    else:
        return {}
    for name, value in items:
        # Plivo may hand them back with its X-PH- prefix, or in another case.
        key = (fact_key(name) or fact_key(f"X-PH-{name}")) if name else None
        if key:
            pairs[key] = decode_value(value)
    return pairs
