from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from billing import health, views

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    # Finance's pages are admin views (login, staff, theme) under the admin's prefix.
    path("admin/finance/", include("billing.finance.urls")),
    path("admin/", admin.site.urls),
    path("webhooks/stripe/", views.stripe_webhook, name="webhook-stripe"),
    path("webhooks/paddle/", views.paddle_webhook, name="webhook-paddle"),
    path("healthz", health.healthz, name="healthz"),
]
