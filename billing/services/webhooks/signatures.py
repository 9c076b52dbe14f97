"""Signature schemes (SPEC §5): HMAC-SHA256 over the timestamp and the raw body.

Stripe signs "t.body" (``Stripe-Signature: t=…,v1=…``), Paddle signs "ts:body"
(``Paddle-Signature: ts=…;h1=…``). Compared in constant time, within a timestamp tolerance, accepting
any of several signatures (the processor's rotation) and any of several configured secrets.
"""

import hashlib
import hmac
import time
from dataclasses import dataclass

from billing.services.webhooks.outcome import WebhookRejected


@dataclass(frozen=True)
class SignatureScheme:
    header: str  # the HTTP header's name, e.g. "Stripe-Signature"
    separator: str  # between the header's key=value pairs
    timestamp_key: str
    signature_key: str
    joiner: bytes  # between the timestamp and the body in the signed text

    @property
    def meta_key(self) -> str:
        """The header's key in Django's request.META."""
        return "HTTP_" + self.header.upper().replace("-", "_")


STRIPE_SCHEME = SignatureScheme("Stripe-Signature", ",", "t", "v1", b".")
PADDLE_SCHEME = SignatureScheme("Paddle-Signature", ";", "ts", "h1", b":")
MAX_HEADER_LENGTH = 2048


def _is_stamp(value: str) -> bool:
    """Unix seconds: ASCII digits, and few of them (int() of 5,000 digits is refused, slowly)."""
    return value.isascii() and value.isdigit() and len(value) <= 12


def _header_pairs(header: str, separator: str) -> list[tuple[str, str]]:
    pairs = []
    for part in header.split(separator):
        key, eq, value = part.strip().partition("=")
        if not eq or not key or not value:
            raise WebhookRejected("malformed signature header")
        pairs.append((key, value))
    return pairs


def signature_verify(
    scheme: SignatureScheme,
    body: bytes,
    header: str | None,
    secrets: list[str],
    *,
    tolerance: int,
    now: float | None = None,
) -> None:
    """Raise WebhookRejected unless one signature in the header matches one secret, in time."""
    if not header:
        raise WebhookRejected(f"missing {scheme.header} header")
    if len(header) > MAX_HEADER_LENGTH:  # before any work: a few signatures fit in far less
        raise WebhookRejected(f"{scheme.header} header longer than {MAX_HEADER_LENGTH} characters")
    pairs = _header_pairs(header, scheme.separator)
    stamps = [v for k, v in pairs if k == scheme.timestamp_key]
    # compare_digest takes ASCII only; a non-ASCII candidate cannot match a hex digest anyway.
    signatures = [v for k, v in pairs if k == scheme.signature_key and v.isascii()]
    if len(stamps) != 1 or not _is_stamp(stamps[0]) or not signatures:
        raise WebhookRejected("malformed signature header")
    stamp = stamps[0]
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > tolerance:
        raise WebhookRejected(f"timestamp outside the {tolerance} s tolerance")
    signed = stamp.encode() + scheme.joiner + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return
    raise WebhookRejected("no signature matches")


def signature_header(scheme: SignatureScheme, body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header a processor would send (for tests, the demo and the benchmark)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), stamp.encode() + scheme.joiner + body, hashlib.sha256).hexdigest()
    sep = scheme.separator
    return f"{scheme.timestamp_key}={stamp}{sep}{scheme.signature_key}={digest}"
