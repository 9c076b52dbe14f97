"""Webhook deliveries go straight to their view, past the admin's middleware (SPEC §11).

A delivery is a processor's signed POST: no session, no login, no CSRF token, no messages, no page
to frame. The middleware after this one (sessions, common, CSRF, authentication, messages,
clickjacking, admin input) had nothing to do for it and cost about a fifth of its Python time, as did
resolving its URL; at 500 deliveries a second on one process that is what the process spends. What
still applies runs: SecurityMiddleware and WhiteNoise before this one (HTTPS redirect, HSTS), the
Host check of ALLOWED_HOSTS and the Content-Length header (CommonMiddleware's, done here), the view's
own POST-only rule, and an exception still becomes a logged 500 (Django wraps every middleware).
"""

from django.urls import get_script_prefix, reverse

from billing import views


class WebhookMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        prefix = len(get_script_prefix()) - 1  # request.path_info carries no script prefix
        self.endpoints = {
            reverse("webhook-stripe")[prefix:]: views.stripe_webhook,
            reverse("webhook-paddle")[prefix:]: views.paddle_webhook,
        }

    def __call__(self, request):
        view = self.endpoints.get(request.path_info)
        if view is None:
            return self.get_response(request)
        request.get_host()  # DisallowedHost (400) for a Host outside ALLOWED_HOSTS, as CommonMiddleware does
        response = view(request)
        # CommonMiddleware's too: without a length, a server sends the body chunked (one more write).
        response.headers["Content-Length"] = str(len(response.content))
        return response
