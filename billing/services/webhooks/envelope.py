"""The envelope every delivery shares: which event, of what type, when the processor created it.

Parsing is also where a body is bounded (SPEC §10): its size, its nesting, numbers JSON cannot carry
(1e999, NaN), and characters PostgreSQL cannot store in jsonb (``\\u0000``, an unpaired surrogate). A
body that is not a well-formed event is rejected (400, nothing written); a well-formed event whose
content cannot be stored as sent is kept with those characters replaced and stored failed, with why.
"""

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from billing.services.webhooks.fields import rfc3339, unix_seconds
from billing.services.webhooks.outcome import WebhookFailed, WebhookRejected

MAX_BODY_BYTES = 1024 * 1024  # the processors' events are a few KB; an invoice with many lines, tens
MAX_DEPTH = 32  # the deepest object the processors send nests about six levels
# \u0000 and unpaired surrogates decode in Python but jsonb refuses them; raw control characters
# are already refused by the JSON parser.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Envelope:
    processor: str
    event_id: str
    event_type: str
    occurred_at: datetime | None
    payload: dict
    problem: str = ""
    api_version: str = ""  # set when the event is genuine but cannot be applied as sent: stored failed


@dataclass(frozen=True)
class EnvelopeShape:
    """Where a processor puts the envelope's fields."""

    id_key: str
    type_key: str
    time_key: str
    parse_time: Callable[[object, str], datetime]
    version_key: str | None = None  # where the payload says its API version, if it does

    def occurred_at(self, payload: dict) -> datetime | None:
        """When the processor created the event; WebhookFailed when the field is there but wrong."""
        value = payload.get(self.time_key)
        return None if value is None else self.parse_time(value, self.time_key)


STRIPE_ENVELOPE = EnvelopeShape("id", "type", "created", unix_seconds, version_key="api_version")
PADDLE_ENVELOPE = EnvelopeShape("event_id", "event_type", "occurred_at", rfc3339)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _depth_exceeds(value, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _storable(value):
    """The value with every character jsonb cannot hold replaced by U+FFFD."""
    if isinstance(value, str):
        return _UNSTORABLE_CHAR.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def body_parse(body: bytes) -> dict:
    """The body as a JSON object, within bounds; WebhookRejected otherwise."""
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRejected(f"body larger than {MAX_BODY_BYTES:,} bytes")
    try:
        payload = json.loads(body, parse_float=_finite_float, parse_constant=_refuse_constant)
    except RecursionError:
        raise WebhookRejected(f"body nested deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected("body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise WebhookRejected("body is not a JSON object")
    # Depth is at most the number of brackets: count them (fast) before walking (rarely needed).
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _depth_exceeds(payload, MAX_DEPTH):
        raise WebhookRejected(f"body nested deeper than {MAX_DEPTH} levels")
    return payload


def envelope_read(
    processor: str, shape: EnvelopeShape, body: bytes, *, refusal: Callable[[dict], str | None] | None = None
) -> Envelope:
    payload = body_parse(body)
    event_id, event_type = payload.get(shape.id_key), payload.get(shape.type_key)
    for key, value, limit in ((shape.id_key, event_id, 200), (shape.type_key, event_type, 100)):
        if (
            not isinstance(value, str)
            or not value
            or len(value) > limit
            or not value.isprintable()
            or _UNSTORABLE_CHAR.search(value)
        ):
            raise WebhookRejected(f"missing or invalid {key!r}")
    if refusal is not None and (why := refusal(payload)):
        raise WebhookRejected(why)
    if not isinstance(payload.get("data"), dict):
        raise WebhookRejected("missing 'data' object")
    version = payload.get(shape.version_key) if shape.version_key else None
    version = version if isinstance(version, str) and len(version) <= 40 and version.isprintable() else ""
    problem = ""
    if _UNSTORABLE_ESCAPE.search(body) and _UNSTORABLE_CHAR.search(json.dumps(payload, ensure_ascii=False)):
        payload = _storable(payload)
        problem = (
            "the event holds characters PostgreSQL cannot store (\\u0000 or an unpaired surrogate); "
            "stored with U+FFFD in their place, not applied"
        )
    try:
        occurred = shape.occurred_at(payload)
    except WebhookFailed as exc:
        occurred, problem = None, problem or str(exc)
    return Envelope(processor, event_id, event_type, occurred, payload, problem, version)
