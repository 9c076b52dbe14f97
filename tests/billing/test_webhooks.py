"""Webhooks (SPEC §5, S6): verification on the raw body, once-only processing, order, failures."""

import io
import threading
import time
import urllib.request
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import AuditLog, CreditGrant, Plan, Subscription, WebhookEvent
from billing.services.webhooks import signature_header
from demo import webhook_payloads as wp
from demo.data import plans_ensure
from tests.factories import CustomerFactory
from usage.models import UsageTracking

STRIPE_SECRET = "whsec_test_current"
OLD_STRIPE_SECRET = "whsec_test_previous"
PADDLE_SECRET = "pdl_ntfset_test"


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.STRIPE_WEBHOOK_SECRET = f"{STRIPE_SECRET},{OLD_STRIPE_SECRET}"
    settings.PADDLE_WEBHOOK_SECRET = PADDLE_SECRET
    settings.WEBHOOK_TOLERANCE_SECONDS = 300


def post(client, processor, payload, *, secret=None, header=None, raw=None, timestamp=None):
    data = raw if raw is not None else wp.body(payload)
    secret = secret or (STRIPE_SECRET if processor == "stripe" else PADDLE_SECRET)
    if header is None:
        header = signature_header(processor, data, secret, timestamp)
    extra = {f"HTTP_{processor.upper()}_SIGNATURE": header} if header else {}
    return client.post(f"/webhooks/{processor}/", data=data, content_type="application/json", **extra)


def wsgi_post(handler, payload) -> str:
    """Deliver a signed Stripe event through Django's WSGI handler as gunicorn's gthread worker calls
    it (request signals included, so CONN_MAX_AGE applies); the answer's status line."""
    data = wp.body(payload)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/webhooks/stripe/",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(data),
        "CONTENT_LENGTH": str(len(data)),
        "CONTENT_TYPE": "application/json",
        "HTTP_STRIPE_SIGNATURE": signature_header("stripe", data, STRIPE_SECRET),
    }
    answer = []
    body = handler(environ, lambda status, headers: answer.append(status))
    b"".join(body)
    body.close()  # request_finished, as the server sends it
    return answer[0]


def state():
    """Everything a webhook may write."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM webhook_events), (SELECT count(*) FROM audit_log), "
            "(SELECT count(*) FROM subscriptions), (SELECT count(*) FROM credit_grants), "
            "(SELECT count(*) FROM usage_tracking), "
            "(SELECT string_agg(plan_id || status || current_period_end, ',' ORDER BY id) FROM subscriptions)"
        )
        return cursor.fetchone()


def ended_an_hour_ago(**kwargs):
    now = timezone.now().replace(microsecond=0)  # processors' periods are whole seconds
    return CustomerFactory(
        current_period_start=now - timedelta(days=30, hours=1),
        current_period_end=now - timedelta(hours=1),
        **kwargs,
    )


@pytest.mark.django_db
class TestStripe:
    def test_s6_subscription_then_renewal_opens_the_new_period_once(self, client):
        plans = plans_ensure()
        customer = ended_an_hour_ago()
        start, end = customer.current_period_start, customer.current_period_end
        created = wp.stripe_event(
            "customer.subscription.created",
            wp.stripe_subscription(
                sub_id="sub_s6",
                customer_id=customer.pk,
                price_id="price_demo_growth",
                status="active",
                start=start,
                end=end,
            ),
            created=start,
        )
        response = post(client, "stripe", created)
        assert response.status_code == 200, response.content
        assert response.json() == {"event_id": created["id"], "status": "processed", "duplicate": False}
        subscription = Subscription.objects.get(external_subscription_id="sub_s6")
        assert (subscription.plan, subscription.status, subscription.processor) == (
            plans["growth"],
            "active",
            "stripe",
        )

        new_end = end + timedelta(days=30)
        renewal = wp.stripe_event(
            "invoice.paid",
            wp.stripe_invoice_paid(sub_id="sub_s6", start=end, end=new_end, price_id="price_demo_growth"),
            created=end,
        )
        for attempt in range(3):
            response = post(client, "stripe", renewal)
            assert response.status_code == 200
            assert response.json()["duplicate"] is (attempt > 0)
        customer.refresh_from_db()
        assert (customer.current_period_start, customer.current_period_end) == (end, new_end)
        assert (
            UsageTracking.objects.filter(customer=customer, period_start=end, period_end=new_end).count() == 1
        )
        assert AuditLog.objects.filter(customer_id=customer.pk, action="period_rollover").count() == 1
        event = WebhookEvent.objects.get(event_id=renewal["id"])
        assert event.status == "processed" and "opened the usage period" in event.outcome
        assert event.customer_id == customer.pk
        effects = AuditLog.objects.filter(customer_id=customer.pk, action="webhook_effect")
        assert effects.count() == 2 and all(e.actor.startswith("stripe webhook evt_") for e in effects)

    def test_s6_an_older_event_after_a_newer_one_changes_nothing(self, client):
        plans = plans_ensure()
        customer = CustomerFactory()
        start, end = customer.current_period_start, customer.current_period_end
        t0 = timezone.now() - timedelta(minutes=10)

        def update(price, at):
            return wp.stripe_event(
                "customer.subscription.updated",
                wp.stripe_subscription(
                    sub_id="sub_order",
                    customer_id=customer.pk,
                    price_id=price,
                    status="active",
                    start=start,
                    end=end,
                ),
                created=at,
            )

        post(client, "stripe", update("price_demo_starter", t0))
        post(client, "stripe", update("price_demo_pro", t0 + timedelta(minutes=5)))
        before = state()
        stale = update("price_demo_growth", t0 + timedelta(minutes=2))
        response = post(client, "stripe", stale)
        assert response.status_code == 200 and response.json()["status"] == "ignored"
        assert Subscription.objects.get(external_subscription_id="sub_order").plan == plans["pro"]
        event = WebhookEvent.objects.get(event_id=stale["id"])
        assert "older than the last applied event" in event.outcome
        after = state()
        assert after[0] == before[0] + 1 and after[1:] == before[1:]  # only the inbox row

    def test_two_events_of_the_same_second_both_apply(self, client):
        """Stripe's ``created`` has whole seconds: an update in the same second as the creation is not
        older than it, and must apply."""
        plans = plans_ensure()
        customer = CustomerFactory()
        at = timezone.now().replace(microsecond=0)

        def event(event_type, price):
            return wp.stripe_event(
                event_type,
                wp.stripe_subscription(
                    sub_id="sub_same_second",
                    customer_id=customer.pk,
                    price_id=price,
                    status="active",
                    start=customer.current_period_start,
                    end=customer.current_period_end,
                ),
                created=at,
            )

        assert (
            post(client, "stripe", event("customer.subscription.created", "price_demo_starter")).json()[
                "status"
            ]
            == "processed"
        )
        upgraded = event("customer.subscription.updated", "price_demo_pro")
        assert post(client, "stripe", upgraded).json() == {
            "event_id": upgraded["id"],
            "status": "processed",
            "duplicate": False,
        }
        assert Subscription.objects.get(external_subscription_id="sub_same_second").plan == plans["pro"]
        assert (
            WebhookEvent.objects.get(event_id=upgraded["id"]).outcome
            == "subscription sub_same_second updated: pro, active."
        )

    def test_signatures_are_compared_with_hmac_compare_digest(self, client, monkeypatch):
        """SPEC §5 asks for a constant-time comparison. A timing test would be flaky, so this checks
        that the standard library's constant-time ``hmac.compare_digest`` is what decides: a spy
        wrapped around it (nothing of ours is replaced) sees the expected and the received signature,
        and when it answers "different", a correctly signed delivery is refused."""
        import hashlib
        import hmac

        plans_ensure()
        compared = []
        real_compare = hmac.compare_digest

        def spy(a, b):
            compared.append((a, b))
            return real_compare(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        payload = wp.stripe_event("charge.refunded", {"id": "ch_ct"}, created=timezone.now())
        data = wp.body(payload)
        stamp = int(time.time())
        expected = hmac.new(STRIPE_SECRET.encode(), f"{stamp}.".encode() + data, hashlib.sha256).hexdigest()
        response = post(client, "stripe", None, raw=data, header=f"t={stamp},v1={expected}")
        assert response.status_code == 200 and response.json()["status"] == "ignored"
        assert compared == [(expected, expected)]

        monkeypatch.setattr(hmac, "compare_digest", lambda a, b: False)
        payload = wp.stripe_event("charge.refunded", {"id": "ch_ct2"}, created=timezone.now())
        response = post(client, "stripe", payload)
        assert (response.status_code, response.json()) == (400, {"error": "no signature matches"})
        assert not WebhookEvent.objects.filter(event_id=payload["id"]).exists()

    def test_subscription_deleted_cancels_and_the_customer_falls_back_to_free(self, client):
        plans_ensure()
        customer = CustomerFactory()
        start, end = customer.current_period_start, customer.current_period_end
        sub = wp.stripe_subscription(
            sub_id="sub_del",
            customer_id=customer.pk,
            price_id="price_demo_starter",
            status="active",
            start=start,
            end=end,
        )
        post(client, "stripe", wp.stripe_event("customer.subscription.created", sub, created=timezone.now()))
        sub["status"] = "canceled"
        post(
            client,
            "stripe",
            wp.stripe_event(
                "customer.subscription.deleted", sub, created=timezone.now() + timedelta(seconds=1)
            ),
        )
        assert Subscription.objects.get(external_subscription_id="sub_del").status == "canceled"
        from billing.selectors import customer_plan

        assert customer_plan(customer).code == "free"

    @pytest.mark.parametrize(
        "stripe_status, ours",
        [
            ("trialing", "trialing"),
            ("active", "active"),
            ("past_due", "past_due"),
            ("unpaid", "past_due"),
            ("incomplete", "past_due"),
            ("paused", "canceled"),  # not paid for while paused: no paid plan (issue 10, as Paddle's pause)
            ("incomplete_expired", "canceled"),
        ],
    )
    def test_stripe_statuses_map_to_ours(self, client, stripe_status, ours):
        plans_ensure()
        customer = CustomerFactory()
        event = wp.stripe_event(
            "customer.subscription.created",
            wp.stripe_subscription(
                sub_id="sub_status",
                customer_id=customer.pk,
                price_id="price_demo_starter",
                status=stripe_status,
                start=customer.current_period_start,
                end=customer.current_period_end,
            ),
            created=timezone.now(),
        )
        assert post(client, "stripe", event).json()["status"] == "processed"
        assert Subscription.objects.get(external_subscription_id="sub_status").status == ours

    def test_a_cancellation_keeps_its_plan_even_when_the_price_is_retired(self, client):
        plans = plans_ensure()
        customer = CustomerFactory()
        sub = wp.stripe_subscription(
            sub_id="sub_retired",
            customer_id=customer.pk,
            price_id="price_demo_growth",
            status="active",
            start=customer.current_period_start,
            end=customer.current_period_end,
        )
        post(client, "stripe", wp.stripe_event("customer.subscription.created", sub, created=timezone.now()))
        Plan.objects.filter(pk=plans["growth"].pk).update(
            stripe_price_id="price_growth_2027"
        )  # the old price retired
        sub["status"] = "canceled"
        deleted = wp.stripe_event(
            "customer.subscription.deleted", sub, created=timezone.now() + timedelta(seconds=1)
        )
        assert post(client, "stripe", deleted).json()["status"] == "processed"
        subscription = Subscription.objects.get(external_subscription_id="sub_retired")
        assert (subscription.status, subscription.plan) == ("canceled", plans["growth"])

    def test_a_paid_renewal_brings_a_past_due_subscription_back_to_active(self, client):
        plans_ensure()
        customer = ended_an_hour_ago()
        start, end = customer.current_period_start, customer.current_period_end
        Subscription.objects.create(
            customer=customer,
            plan=Plan.objects.get(code="growth"),
            processor="stripe",
            status="past_due",
            external_subscription_id="sub_late",
            current_period_start=start,
            current_period_end=end,
        )
        renewal = wp.stripe_event(
            "invoice.paid",
            wp.stripe_invoice_paid(
                sub_id="sub_late", start=end, end=end + timedelta(days=30), price_id="price_demo_growth"
            ),
            created=end,
        )
        assert post(client, "stripe", renewal).json()["status"] == "processed"
        subscription = Subscription.objects.get(external_subscription_id="sub_late")
        assert (subscription.status, subscription.current_period_start) == ("active", end)
        audit = AuditLog.objects.get(action="webhook_effect")
        assert (audit.before["status"], audit.after["status"]) == ("past_due", "active")

    def test_overage_pack_grants_credit_once(self, client):
        plans_ensure()
        customer = CustomerFactory()
        session = wp.stripe_pack_checkout(customer_id=customer.pk, metric="minutes", quantity=100)
        event = wp.stripe_event("checkout.session.completed", session, created=timezone.now())
        assert post(client, "stripe", event).json()["status"] == "processed"
        # The processor sends the same payment again under a new event id: still one grant.
        again = wp.stripe_event("checkout.session.completed", session, created=timezone.now())
        assert post(client, "stripe", again).json()["status"] == "processed"
        grant = CreditGrant.objects.get(customer=customer)
        assert (grant.granted, grant.remaining, grant.source, grant.metric) == (
            100,
            100,
            "purchase",
            "minutes",
        )
        # A checkout that is not paid yet (a bank debit, say) grants nothing.
        unpaid = wp.stripe_pack_checkout(customer_id=customer.pk, metric="minutes", quantity=100)
        unpaid["payment_status"] = "unpaid"
        event = wp.stripe_event("checkout.session.completed", unpaid, created=timezone.now())
        assert post(client, "stripe", event).json()["status"] == "ignored"
        assert WebhookEvent.objects.get(event_id=event["id"]).outcome == "checkout not paid ('unpaid')"
        assert CreditGrant.objects.filter(customer=customer).count() == 1
        assert AuditLog.objects.filter(action="credit_grant", customer_id=customer.pk).count() == 1

    def test_unknown_types_and_non_renewal_invoices_are_stored_as_ignored(self, client):
        plans_ensure()
        event = wp.stripe_event("charge.refunded", {"id": "ch_1", "object": "charge"}, created=timezone.now())
        assert post(client, "stripe", event).json()["status"] == "ignored"
        invoice = wp.stripe_event(
            "invoice.paid",
            wp.stripe_invoice_paid(
                sub_id="sub_x",
                start=timezone.now(),
                end=timezone.now() + timedelta(days=30),
                price_id="p",
                billing_reason="subscription_create",
            ),
            created=timezone.now(),
        )
        assert post(client, "stripe", invoice).json()["status"] == "ignored"
        assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"ignored"}

    def test_secret_rotation_several_signatures_and_several_secrets(self, client):
        plans_ensure()
        payload = wp.stripe_event("charge.refunded", {"id": "ch_2"}, created=timezone.now())
        data = wp.body(payload)
        stamp = int(time.time())
        old = signature_header("stripe", data, OLD_STRIPE_SECRET, stamp).split(",")[1]
        unknown = signature_header("stripe", data, "whsec_unknown", stamp).split(",")[1]
        # Stripe sends one v1 per active secret during its rotation; any one matching is enough.
        assert post(client, "stripe", None, raw=data, header=f"t={stamp},{unknown},{old}").status_code == 200

    def test_failed_event_is_stored_with_its_error_and_replayed_after_the_fix(self, client, staff_client):
        plans = plans_ensure()
        customer = CustomerFactory()
        event = wp.stripe_event(
            "customer.subscription.created",
            wp.stripe_subscription(
                sub_id="sub_fail",
                customer_id=customer.pk,
                price_id="price_enterprise_2026",
                status="active",
                start=customer.current_period_start,
                end=customer.current_period_end,
            ),
            created=timezone.now(),
        )
        response = post(client, "stripe", event)
        assert response.status_code == 200 and response.json()["status"] == "failed"
        stored = WebhookEvent.objects.get(event_id=event["id"])
        assert "price 'price_enterprise_2026' maps to no plan" in stored.error
        assert stored.customer_id == customer.pk  # named in its metadata: shows on the customer's page
        assert not Subscription.objects.exists() and not AuditLog.objects.exists()

        Plan.objects.filter(pk=plans["pro"].pk).update(stripe_price_id="price_enterprise_2026")
        support = staff_client("sam", "Support")
        response = support.post(
            "/admin/billing/webhookevent/",
            {"action": "replay_failed", "_selected_action": [stored.pk]},
            follow=True,
        )
        assert "Replayed 1 event; 0 still failing; 0 skipped (not failed)." in response.content.decode()
        stored.refresh_from_db()
        assert (stored.status, stored.attempts, stored.error) == ("processed", 2, "")
        assert Subscription.objects.get(external_subscription_id="sub_fail").plan == plans["pro"]
        assert "replayed by sam" in AuditLog.objects.get(action="webhook_effect").actor


@pytest.mark.django_db
class TestFailedAndReplaced:
    def test_unknown_customer_and_empty_renewal_period_are_stored_failed_with_nothing_else_written(
        self, client
    ):
        plans_ensure()
        now = timezone.now()
        orphan = wp.stripe_event(
            "customer.subscription.created",
            wp.stripe_subscription(
                sub_id="sub_orphan",
                customer_id="00000000-0000-0000-0000-00000000beef",
                price_id="price_demo_growth",
                status="active",
                start=now,
                end=now + timedelta(days=30),
            ),
            created=now,
        )
        customer = CustomerFactory()
        Subscription.objects.create(
            customer=customer,
            plan=Plan.objects.get(code="growth"),
            processor="stripe",
            external_subscription_id="sub_empty",
            current_period_start=now,
            current_period_end=now + timedelta(days=30),
        )
        empty = wp.stripe_event(
            "invoice.paid",
            wp.stripe_invoice_paid(
                sub_id="sub_empty", start=now + timedelta(days=30), end=now + timedelta(days=30), price_id="p"
            ),
            created=now,
        )
        before = state()
        # A customer not there yet is answered non-2xx so the processor retries (issue 10); an empty
        # period is permanent: 200, stored failed for a person.
        for event, error, code in (
            (orphan, "names no customer", 409),
            (empty, "the renewal's period is empty", 200),
        ):
            response = post(client, "stripe", event)
            assert response.status_code == code and response.json()["status"] == "failed"
            assert error in WebhookEvent.objects.get(event_id=event["id"]).error
        after = state()
        assert after[0] == before[0] + 2 and after[1:] == before[1:]
        # Neither names an existing customer in its metadata, so neither is attached to one.
        assert WebhookEvent.objects.get(event_id=empty["id"]).customer_id is None
        assert WebhookEvent.objects.get(event_id=orphan["id"]).customer_id is None

    def test_replay_refuses_events_that_did_not_fail(self, client, staff_client):
        from billing.services.webhooks import webhook_replay

        plans_ensure()
        event = wp.stripe_event("charge.refunded", {"id": "ch_3"}, created=timezone.now())
        post(client, "stripe", event)
        stored = WebhookEvent.objects.get(event_id=event["id"])
        with pytest.raises(ValueError, match="only failed events are replayed"):
            webhook_replay(stored, actor="t")
        response = staff_client("sam", "Support").post(
            "/admin/billing/webhookevent/",
            {"action": "replay_failed", "_selected_action": [stored.pk]},
            follow=True,
        )
        assert "1 skipped (not failed)" in response.content.decode()
        stored.refresh_from_db()
        assert (stored.status, stored.attempts) == ("ignored", 1)

    def test_a_processor_subscription_replaces_the_live_one_and_audits_its_real_status(self, client):
        plans = plans_ensure()
        customer = CustomerFactory()
        manual = Subscription.objects.create(
            customer=customer,
            plan=plans["starter"],
            status="past_due",
            current_period_start=customer.current_period_start,
            current_period_end=customer.current_period_end,
        )
        event = wp.stripe_event(
            "customer.subscription.created",
            wp.stripe_subscription(
                sub_id="sub_new",
                customer_id=customer.pk,
                price_id="price_demo_growth",
                status="active",
                start=customer.current_period_start,
                end=customer.current_period_end,
            ),
            created=timezone.now(),
        )
        assert post(client, "stripe", event).json()["status"] == "processed"
        manual.refresh_from_db()
        assert manual.status == "canceled"
        replaced = AuditLog.objects.get(target_id=str(manual.pk))
        assert replaced.before == {"status": "past_due", "plan": "starter"} and replaced.after == {
            "status": "canceled"
        }


@pytest.mark.django_db
class TestRejected:
    def _event(self):
        return wp.stripe_event(
            "customer.subscription.created",
            wp.stripe_subscription(
                sub_id="sub_bad",
                customer_id=CustomerFactory().pk,
                price_id="price_demo_growth",
                status="active",
                start=timezone.now(),
                end=timezone.now() + timedelta(days=30),
            ),
            created=timezone.now(),
        )

    @pytest.mark.parametrize(
        "case",
        [
            "tampered",
            "stale",
            "future",
            "wrong_secret",
            "missing",
            "garbled_header",
            "malformed_json",
            "not_an_object",
            "no_id",
            "no_data",
        ],
    )
    def test_bad_requests_get_400_and_write_nothing(self, client, case, caplog):
        plans_ensure()
        payload = self._event()
        data = wp.body(payload)
        kwargs = {}
        if case == "tampered":
            header = signature_header("stripe", data, STRIPE_SECRET)
            kwargs = dict(raw=data.replace(b"price_demo_growth", b"price_demo_pro"), header=header)
        elif case == "stale":
            kwargs = dict(raw=data, timestamp=int(time.time()) - 301)
        elif case == "future":
            kwargs = dict(raw=data, timestamp=int(time.time()) + 301)
        elif case == "wrong_secret":
            kwargs = dict(raw=data, secret="whsec_attacker")
        elif case == "missing":
            kwargs = dict(raw=data, header="")
        elif case == "garbled_header":
            kwargs = dict(raw=data, header="v1 deadbeef")
        elif case == "malformed_json":
            kwargs = dict(raw=data[:-7])
        elif case == "not_an_object":
            kwargs = dict(raw=b"[1, 2, 3]")
        elif case == "no_id":
            payload.pop("id")
            kwargs = dict(raw=wp.body(payload))
        elif case == "no_data":
            payload["data"] = "subscription"
            kwargs = dict(raw=wp.body(payload))
        before = state()
        response = post(client, "stripe", None, **kwargs)
        assert response.status_code == 400
        assert response.json()["error"]
        assert state() == before
        assert any("rejected stripe webhook" in r.getMessage() for r in caplog.records)

    def test_the_tolerance_is_inclusive_to_the_second(self):
        from billing.services.webhooks import WebhookRejected, signature_verify

        body, now = b'{"id": "evt_edge"}', 1_800_000_000
        for age in (-300, 0, 300):
            header = signature_header("stripe", body, STRIPE_SECRET, now - age)
            signature_verify("stripe", body, header, [STRIPE_SECRET], tolerance=300, now=now)  # accepted
        for age in (-301, 301):
            header = signature_header("stripe", body, STRIPE_SECRET, now - age)
            with pytest.raises(WebhookRejected, match="^timestamp outside the 300 s tolerance$"):
                signature_verify("stripe", body, header, [STRIPE_SECRET], tolerance=300, now=now)

    def test_paddle_bad_signature_and_get_method(self, client):
        plans_ensure()
        payload = wp.paddle_event("subscription.created", {"id": "sub_x"}, occurred=timezone.now())
        before = state()
        assert post(client, "paddle", payload, secret="wrong").status_code == 400
        assert client.get("/webhooks/paddle/").status_code == 405
        assert state() == before

    def test_unset_secret_is_503_not_a_silent_accept(self, client, settings):
        settings.STRIPE_WEBHOOK_SECRET = ""
        before = state()
        assert post(client, "stripe", {"id": "evt_1", "type": "x", "data": {}}).status_code == 503
        assert state() == before


@pytest.mark.django_db
class TestPaddle:
    def test_subscription_renewal_and_pack(self, client):
        plans = plans_ensure()
        customer = ended_an_hour_ago()
        start, end = customer.current_period_start, customer.current_period_end
        created = wp.paddle_event(
            "subscription.created",
            wp.paddle_subscription(
                sub_id="sub_01paddle",
                customer_id=customer.pk,
                price_id="pri_demo_starter",
                status="active",
                start=start,
                end=end,
            ),
            occurred=start,
        )
        assert post(client, "paddle", created).json()["status"] == "processed"
        assert Subscription.objects.get(processor="paddle").plan == plans["starter"]

        first_payment = wp.paddle_event(
            "transaction.completed",
            wp.paddle_transaction(sub_id="sub_01paddle", origin="web", start=start, end=end),
            occurred=start,
        )
        assert post(client, "paddle", first_payment).json()["status"] == "ignored"

        renewal = wp.paddle_event(
            "transaction.completed",
            wp.paddle_transaction(
                sub_id="sub_01paddle",
                origin="subscription_recurring",
                start=end,
                end=end + timedelta(days=30),
            ),
            occurred=end,
        )
        assert post(client, "paddle", renewal).json()["status"] == "processed"
        customer.refresh_from_db()
        assert customer.current_period_start == end

        pack = wp.paddle_event(
            "transaction.completed",
            wp.paddle_transaction(
                sub_id=None,
                origin="web",
                custom_data={"customer_id": str(customer.pk), "metric": "ai_interaction", "quantity": "500"},
            ),
            occurred=timezone.now(),
        )
        assert post(client, "paddle", pack).json()["status"] == "processed"
        assert CreditGrant.objects.get(customer=customer).granted == 500

        bad_pack = wp.paddle_event(
            "transaction.completed",
            wp.paddle_transaction(
                sub_id=None,
                origin="web",
                custom_data={"customer_id": str(customer.pk), "metric": "ai_interaction", "quantity": "-5"},
            ),
            occurred=timezone.now(),
        )
        response = post(client, "paddle", bad_pack)
        assert response.json()["status"] == "failed"
        assert "positive number" in WebhookEvent.objects.get(event_id=bad_pack["event_id"]).error
        assert CreditGrant.objects.filter(customer=customer).count() == 1


@pytest.mark.django_db(transaction=True)
def test_redelivered_three_times_in_parallel_is_processed_once(live_server, settings):
    """Three real HTTP deliveries of one renewal at the same moment: one effect, three 200s."""
    plans_ensure()
    customer = ended_an_hour_ago()
    start, end = customer.current_period_start, customer.current_period_end
    Subscription.objects.create(
        customer=customer,
        plan=Plan.objects.get(code="growth"),
        processor="stripe",
        external_subscription_id="sub_par",
        current_period_start=start,
        current_period_end=end,
    )
    renewal = wp.stripe_event(
        "invoice.paid",
        wp.stripe_invoice_paid(
            sub_id="sub_par", start=end, end=end + timedelta(days=30), price_id="price_demo_growth"
        ),
        created=end,
    )
    data = wp.body(renewal)
    barrier = threading.Barrier(3)
    answers, errors = [], []

    def deliver():
        request = urllib.request.Request(
            f"{live_server.url}/webhooks/stripe/",
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": signature_header("stripe", data, STRIPE_SECRET),
            },
        )
        try:
            barrier.wait(timeout=30)
            with urllib.request.urlopen(request, timeout=60) as response:
                answers.append((response.status, response.read()))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert sorted(status for status, _ in answers) == [200, 200, 200]
    assert sum(b'"duplicate": false' in body for _, body in answers) == 1
    assert WebhookEvent.objects.count() == 1
    assert AuditLog.objects.filter(action="period_rollover").count() == 1
    assert AuditLog.objects.filter(action="webhook_effect").count() == 1
    assert UsageTracking.objects.filter(customer=customer, period_start=end).count() == 1


@pytest.mark.django_db
class TestGoodwillAdmin:
    """Support's goodwill grant in the admin: bad quantities or no reason write nothing."""

    @pytest.mark.parametrize(
        "granted, reason, error",
        [
            ("-5", "outage", "positive number"),
            ("ten", "outage", "positive number"),
            ("0.0001", "outage", "positive number"),
            ("5", "   ", "This field is required"),
        ],
    )
    def test_bad_form_input_is_refused(self, staff_client, granted, reason, error):
        customer = CustomerFactory()
        support = staff_client("sam", "Support")
        response = support.post(
            "/admin/billing/creditgrant/add/",
            {"customer": customer.pk, "metric": "minutes", "granted": granted, "reason": reason},
        )
        assert response.status_code == 200 and error in response.content.decode()
        assert not CreditGrant.objects.exists() and not AuditLog.objects.exists()

    def test_grant_is_created_full_and_audited_and_finance_cannot_add(self, staff_client):
        customer = CustomerFactory()
        support = staff_client("sam", "Support")
        response = support.post(
            "/admin/billing/creditgrant/add/",
            {"customer": customer.pk, "metric": "minutes", "granted": "25", "reason": "outage on the 3rd"},
        )
        grant = CreditGrant.objects.get()
        assert (response.status_code, response.url) == (302, "/admin/billing/creditgrant/")
        assert (grant.granted, grant.remaining, grant.source, grant.created_by) == (
            25,
            25,
            "goodwill",
            "sam (admin)",
        )
        assert AuditLog.objects.get(action="credit_grant").reason == "outage on the 3rd"
        finance = staff_client("fay", "Finance")
        assert finance.get("/admin/billing/creditgrant/add/").status_code == 403
        grants = finance.get("/admin/billing/creditgrant/").content.decode()
        assert (
            customer.email in grants
            and "outage on the 3rd" not in grants
            and "Add credit grant" not in grants
        )
