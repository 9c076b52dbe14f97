"""A processor, as the inbox sees it: its signature scheme, its envelope, its handlers."""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from billing.models import WebhookEvent
from billing.services.webhooks.envelope import Envelope, EnvelopeShape, envelope_read
from billing.services.webhooks.fields import Fields
from billing.services.webhooks.outcome import Outcome, WebhookFailed
from billing.services.webhooks.signatures import SignatureScheme, signature_header, signature_verify

Handler = Callable[[WebhookEvent, str], Outcome]  # (event, actor) -> outcome
OneStatement = Callable[[WebhookEvent, str], tuple[str, list] | None]


@dataclass(frozen=True)
class Processor:
    name: str
    secret_setting: str  # comma-separated secrets (rotation) in this setting
    scheme: SignatureScheme
    envelope: EnvelopeShape
    metadata_key: str  # where our customer id travels: metadata / custom_data
    handlers: dict[str, Handler]
    object_in_data: bool  # Stripe nests the object in data.object, Paddle's data is the object
    # The API versions (first, last; ISO dates) the handlers were written for; () = unversioned.
    api_versions: tuple[str, str] | tuple[()] = ()
    # A body that parses but is not an event this endpoint can apply: why (400), or None.
    refusal: Callable[[dict], str | None] | None = None
    # The usual events recorded and applied by one SQL function call (SPEC §11): per event type,
    # (event, actor) -> (function, its effect's arguments), or None for the Python path (handlers).
    one_statement: dict[str, OneStatement] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        raw = getattr(settings, self.secret_setting)
        return [s.strip() for s in (raw or "").split(",") if s.strip()]

    def verify(self, body: bytes, header: str | None, secrets: list[str], **kwargs) -> None:
        signature_verify(self.scheme, body, header, secrets, **kwargs)

    def sign(self, body: bytes, secret: str, timestamp: int | None = None) -> str:
        return signature_header(self.scheme, body, secret, timestamp)

    def parse(self, body: bytes) -> Envelope:
        return envelope_read(self.name, self.envelope, body, refusal=self.refusal)

    def api_version_unexpected(self, version: str) -> bool:
        """True when the event's API version is outside those the handlers were written for."""
        if not self.api_versions or not version:
            return False
        first, last = self.api_versions
        return not first <= version[:10] <= last

    def object(self, event: WebhookEvent) -> dict:
        data = event.payload["data"]
        obj = data.get("object") if self.object_in_data else data
        if not isinstance(obj, dict):
            raise WebhookFailed("event data has no object")
        return obj

    def fields(self, event: WebhookEvent) -> Fields:
        """The event's object, for typed reads."""
        return Fields(self.object(event), "data.object" if self.object_in_data else "data")
