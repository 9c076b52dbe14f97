"""Typed reads from a processor's object (SPEC §10: no 500 from outside input).

A signed event is still outside input: every field a handler reads goes through ``Fields``, which
checks its JSON type, its length and its range, and raises WebhookFailed naming the field's path
(``data.object.items.data[0].price.id: expected a string, got a number``), so the event is stored
failed with a reason a person can act on, instead of answering 500.
"""

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from uuid import UUID

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.services.webhooks.outcome import WebhookFailed
from usage.horizon import EARLIEST, latest

MAX_TEXT = 500  # ids, statuses, codes: nothing we read is longer

_JSON_TYPE = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}


def _kind(value) -> str:
    if isinstance(value, bool) or value is None:
        return _JSON_TYPE[type(value)]
    if isinstance(value, int | float):
        return "a number"
    return _JSON_TYPE.get(type(value), type(value).__name__)


def time_in_range(value: datetime, path: str) -> datetime:
    last = latest(timezone.now())
    if not EARLIEST <= value <= last:
        raise WebhookFailed(
            f"{path}: {value.isoformat()} is outside the accepted range "
            f"[{EARLIEST.date().isoformat()}, {last.date().isoformat()}]"
        )
    return value


def unix_seconds(value, path: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebhookFailed(f"{path}: expected a Unix time in seconds, got {_kind(value)}")
    if not EARLIEST.timestamp() <= value <= latest(timezone.now()).timestamp():
        raise WebhookFailed(f"{path}: {value} is outside the accepted range of times")
    return datetime.fromtimestamp(value, tz=UTC)


def rfc3339(value, path: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise WebhookFailed(f"{path}: expected an RFC 3339 time, got {_kind(value)}")
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise WebhookFailed(f"{path}: {value!r} is not an RFC 3339 time with a zone")
    return time_in_range(parsed, path)


class Fields:
    """One JSON object of the payload and its path, read field by field with the expected type."""

    __slots__ = ("data", "path")

    def __init__(self, data, path: str):
        if not isinstance(data, dict):
            raise WebhookFailed(f"{path}: expected an object, got {_kind(data)}")
        self.data, self.path = data, path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str):
        return self.data.get(key)

    def text(self, key: str, *, required: bool = True, max_length: int = MAX_TEXT) -> str | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise WebhookFailed(f"{self._at(key)}: expected a non-empty string, got {_kind(value)}")
        if len(value) > max_length:
            raise WebhookFailed(f"{self._at(key)}: longer than {max_length} characters")
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise WebhookFailed(f"{self._at(key)}: expected true/false, got {_kind(value)}")
        return value

    def integer(self, key: str, *, minimum: int = 0, maximum: int = 10**15) -> int:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise WebhookFailed(f"{self._at(key)}: expected a whole number, got {_kind(value)}")
        if not minimum <= value <= maximum:
            raise WebhookFailed(f"{self._at(key)}: {value} is outside [{minimum}, {maximum}]")
        return value

    def amount(self, key: str) -> int:
        """Money in minor units, as Stripe (a number) and Paddle (a string of digits) send it."""
        value = self.data.get(key)
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
            return int(value)
        return self.integer(key)

    def decimal(self, key: str) -> Decimal:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise WebhookFailed(f"{self._at(key)}: expected a number as a string, got {_kind(value)}")
        try:
            parsed = Decimal(str(value).strip()) if len(str(value)) <= 40 else None
        except InvalidOperation:
            parsed = None
        if parsed is None or not parsed.is_finite():
            raise WebhookFailed(f"{self._at(key)}: {str(value)[:40]!r} is not a number")
        return parsed

    def uuid(self, key: str) -> UUID:
        value = self.data.get(key)
        if not isinstance(value, str) or len(value) > 36:
            raise WebhookFailed(f"{self._at(key)}: expected our customer id (a UUID), got {_kind(value)}")
        try:
            return UUID(value)
        except ValueError:
            raise WebhookFailed(f"{self._at(key)}: {value!r} is not a customer id (a UUID)") from None

    def unix_time(self, key: str) -> datetime:
        return unix_seconds(self.data.get(key), self._at(key))

    def iso_time(self, key: str) -> datetime:
        return rfc3339(self.data.get(key), self._at(key))

    def obj(self, key: str, *, required: bool = False) -> "Fields":
        value = self.data.get(key)
        if value is None and not required:
            return Fields({}, self._at(key))
        return Fields(value, self._at(key))

    def objects(self, key: str) -> list["Fields"]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise WebhookFailed(f"{self._at(key)}: expected a list, got {_kind(value)}")
        return [Fields(item, f"{self._at(key)}[{i}]") for i, item in enumerate(value)]
