"""Refunds and chargebacks of overage packs (SPEC §5): what is left of the pack's credit is taken back.

The take-back is a ledger entry (a ``credit_draws`` row of kind refund or chargeback, no usage event),
so ``remaining`` stays derived from the ledger (I4) and finance can sum what was refunded; what usage
had already drawn stays drawn and is shown in the audit row and the outcome. A dispute the merchant
wins gives back what its chargeback took: a chargeback entry of the opposite sign, so the pack's
chargebacks sum to nothing.
"""

from collections.abc import Callable

from django.db.models import Sum

from billing.models import AuditLog, CreditDraw, CreditGrant, WebhookEvent
from billing.services.audit import audit_record
from billing.services.webhooks.outcome import Outcome


def pack_take_back(
    event: WebhookEvent,
    *,
    external_ref: str,
    kind: str,
    actor: str,
    settled: Callable[[CreditGrant], str | None] | None = None,
) -> Outcome:
    """Take back what is left of the pack paid by ``external_ref``; once per grant.

    ``settled``, asked under the grant's lock, says why nothing is to be taken (a dispute already
    closed in the merchant's favour, its close delivered first), or None.
    """
    grant = CreditGrant.objects.select_for_update().filter(external_ref=external_ref).first()
    if grant is None:
        return Outcome.ignored(f"{kind} of {external_ref}, which bought no overage pack")
    if settled is not None and (why := settled(grant)):
        return Outcome.processed(why, grant.customer_id)
    taken = CreditDraw.objects.filter(grant=grant, kind__in=CreditDraw.TAKE_BACK_KINDS).aggregate(
        n=Sum("quantity")
    )["n"]
    if taken:  # 0 once a won dispute gave the chargeback back: a later refund takes what is left
        return Outcome.processed(
            f"the pack paid by {external_ref} was already taken back ({taken.normalize():f})",
            grant.customer_id,
        )
    left, used = grant.remaining, grant.granted - grant.remaining
    if left > 0:
        CreditDraw.objects.create(grant=grant, customer_id=grant.customer_id, quantity=left, kind=kind)
    audit_record(
        actor=actor,
        action=AuditLog.Action.WEBHOOK_EFFECT,
        target_type="credit_grant",
        target_id=grant.pk,
        customer_id=grant.customer_id,
        before={"remaining": str(left), "used": str(used)},
        after={"remaining": "0", "taken_back": str(left), "used": str(used)},
        reason=f"pack {kind} ({event.event_type} {event.event_id})",
    )
    return Outcome.processed(
        f"{kind}: took back {left.normalize():f} {grant.metric} credit left of "
        f"{grant.granted.normalize():f}; {used.normalize():f} had already been used",
        grant.customer_id,
    )


def pack_give_back(event: WebhookEvent, *, external_ref: str, actor: str) -> Outcome:
    """A won dispute of the pack paid by ``external_ref``: what its chargeback took comes back; once."""
    grant = CreditGrant.objects.select_for_update().filter(external_ref=external_ref).first()
    if grant is None:
        return Outcome.ignored(f"dispute won for {external_ref}, which bought no overage pack")
    taken = CreditDraw.objects.filter(grant=grant, kind=CreditDraw.Kind.CHARGEBACK).aggregate(
        n=Sum("quantity")
    )["n"]
    if not taken or taken < 0:
        return Outcome.processed(
            f"dispute won: the chargeback of {external_ref} took nothing that is not back already",
            grant.customer_id,
        )
    CreditDraw.objects.create(
        grant=grant, customer_id=grant.customer_id, quantity=-taken, kind=CreditDraw.Kind.CHARGEBACK
    )
    audit_record(
        actor=actor,
        action=AuditLog.Action.WEBHOOK_EFFECT,
        target_type="credit_grant",
        target_id=grant.pk,
        customer_id=grant.customer_id,
        before={"remaining": str(grant.remaining)},
        after={"remaining": str(grant.remaining + taken), "given_back": str(taken)},
        reason=f"pack dispute won ({event.event_type} {event.event_id})",
    )
    return Outcome.processed(
        f"dispute won: gave back {taken.normalize():f} {grant.metric} credit the chargeback had taken",
        grant.customer_id,
    )
