"""Webhook endpoints (SPEC §5): thin wrappers over billing.services.webhooks."""

import logging

from django.db import InterfaceError, OperationalError, connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.services.webhooks import MAX_BODY_BYTES, SIGNATURE_HEADERS, WebhookRejected, webhook_receive

log = logging.getLogger("billing.webhooks")


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _receive(processor: str, body: bytes, signature: str | None):
    """webhook_receive, without Django's health check of the kept connection (CONN_HEALTH_CHECKS).

    That check is a ``SELECT 1`` round trip before each request's first statement: for a delivery
    whose whole work is one statement it cost a fifth of the delivery's CPU (SPEC §11). A delivery
    skips it and lets its own first statement find a connection the server dropped: then the
    connection is closed and the delivery received once more on a new one. Nothing was kept by the
    attempt that failed (each statement or transaction of the inbox commits whole, and a repeat of a
    delivery that did commit is answered as a duplicate), so the event is still applied once.
    """
    unchecked = (
        connection.connection is not None
        and connection.health_check_enabled
        and not connection.health_check_done
        and not connection.in_atomic_block
    )
    connection.health_check_done = True
    try:
        return webhook_receive(processor, body, signature)
    except (OperationalError, InterfaceError):
        if not unchecked or connection.is_usable():
            raise
        log.warning("%s webhook: the database connection was lost; receiving it on a new one", processor)
        connection.close()
        return webhook_receive(processor, body, signature)


def _endpoint(processor: str):
    @csrf_exempt
    @require_POST
    def receive(request):
        # Before reading the body: a declared size beyond the bound is refused unread.
        if _content_length(request) > MAX_BODY_BYTES:
            log.warning(
                "rejected %s webhook from %s: body too large", processor, request.META.get("REMOTE_ADDR")
            )
            return JsonResponse({"error": f"body larger than {MAX_BODY_BYTES:,} bytes"}, status=413)
        try:
            ingested = _receive(processor, request.body, request.META.get(SIGNATURE_HEADERS[processor]))
        except WebhookRejected as exc:
            log.warning("rejected %s webhook from %s: %s", processor, request.META.get("REMOTE_ADDR"), exc)
            return JsonResponse({"error": str(exc)}, status=400)
        except RuntimeError as exc:  # our configuration, not the sender's fault: let it retry later
            log.error("%s webhook: %s", processor, exc)
            return JsonResponse({"error": "webhook endpoint not configured"}, status=503)
        event = ingested.event
        answer = {"event_id": event.event_id, "status": event.status, "duplicate": ingested.duplicate}
        if ingested.retry:  # something it needs is not there yet: non-2xx, so the processor retries
            return JsonResponse({**answer, "retry": True, "error": event.error}, status=409)
        return JsonResponse(answer)

    receive.__name__ = f"{processor}_webhook"
    return receive


stripe_webhook = _endpoint("stripe")
paddle_webhook = _endpoint("paddle")
