from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from billing import health, views

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("webhooks/stripe/", views.stripe_webhook, name="webhook-stripe"),
    path("webhooks/paddle/", views.paddle_webhook, name="webhook-paddle"),
    path("healthz", health.healthz, name="healthz"),
]
