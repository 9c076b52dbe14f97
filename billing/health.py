"""Health endpoint for load balancers and uptime checks (SPEC §13).

200 when the database answers and every counter trigger and function is present, enabled and
current; 503 otherwise. No login, and the body tells only counts: the names of unhealthy triggers
and the database error go to the log, for the people who can act on them.
"""

import logging

from django.db import DatabaseError
from django.http import JsonResponse
from django.views.decorators.http import require_safe

from billing.ops.checks import trigger_health

log = logging.getLogger("billing.health")


@require_safe
def healthz(request):
    try:
        statuses = trigger_health()
    except DatabaseError as exc:  # down, unreachable, refusing connections: expected, one line
        log.warning("health: database unreachable: %s", str(exc).strip())
        return JsonResponse({"status": "unhealthy", "database": "unreachable", "triggers": None}, status=503)
    except Exception:  # anything else is a bug: its traceback goes to the log, the balancer sees 503
        log.exception("health check failed")
        return JsonResponse({"status": "unhealthy", "database": "unknown", "triggers": None}, status=503)

    unhealthy = [status for status in statuses if not status.ok]
    for status in unhealthy:
        log.warning("health: counter %s %s: %s", status.kind, status.name, status.problem)
    body = {
        "status": "unhealthy" if unhealthy else "ok",
        "database": "ok",
        "triggers": {"healthy": len(statuses) - len(unhealthy), "unhealthy": len(unhealthy)},
    }
    return JsonResponse(body, status=503 if unhealthy else 200)
