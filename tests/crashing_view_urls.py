"""Production's URLs and one view that fails unexpectedly (tests/crashing_view_settings.py)."""

from django.urls import path

from billing.urls import urlpatterns as production_urlpatterns


def crash(request):
    raise RuntimeError("an unexpected error in the crash test view")


urlpatterns = [path("crash", crash), *production_urlpatterns]
