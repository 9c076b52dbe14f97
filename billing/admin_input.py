"""Admin requests carrying input no page can use answer 400, not 500 (SPEC §10).

Two kinds reached the database from any admin list and answered 500 (found by posting and filtering
every changelist as an attacker would):

- an action posted on a selection whose ids are not the model's keys (``_selected_action=zzz`` on
  a UUID or integer key: Django's admin filters ``pk__in`` with them and raises);
- a NUL character in a list filter's value (``?status=%00``), or in a plan change's reason (the
  audit row's jsonb refused it): PostgreSQL text cannot hold it, the database refuses it, and the
  change's transaction rolls back. Pages that read their own parameters (Finance's, the plan and
  month filters) and Django's forms answer these themselves; this catches the rest.
"""

import logging

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.db import DataError
from django.http import HttpResponseBadRequest

log = logging.getLogger("billing.admin")

ADMIN_PREFIX = "/admin/"
BAD_SELECTION = "Bad request: the selection holds {value!r}, which is not the id of a {model}."
NUL_CHARACTER = "Bad request: a parameter holds a NUL character, which no field can hold."


class AdminInputMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        model_admin = getattr(view_func, "model_admin", None)  # set on every ModelAdmin view
        if model_admin is None or request.method != "POST" or not request.path.startswith(ADMIN_PREFIX):
            return None
        key = model_admin.model._meta.pk
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                key.get_prep_value(key.to_python(value))
            except (ValidationError, ValueError, TypeError):
                return _refuse(
                    request,
                    BAD_SELECTION.format(value=value[:40], model=model_admin.model._meta.verbose_name),
                )
        return None

    def process_exception(self, request, exception):
        if request.path.startswith(ADMIN_PREFIX) and isinstance(exception, DataError) and _holds_nul(request):
            return _refuse(request, NUL_CHARACTER)
        return None


def _holds_nul(request) -> bool:
    queries = [request.GET, request.POST] if request.method == "POST" else [request.GET]
    return any(
        "\x00" in text for query in queries for key, values in query.lists() for text in (key, *values)
    )


def _refuse(request, message: str) -> HttpResponseBadRequest:
    log.warning("refused %s %s: %s", request.method, request.path, message)
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
