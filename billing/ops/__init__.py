"""The operations support, finance and cron run, composing usage's counters with billing's rules (SPEC §3).

    checks.py       every check, composed: usage's counter checks + billing's credit check; trigger health
    integrity.py    the discrepancy report and reconciliation (Recount is a one-customer reconciliation)
    findings.py     what is wrong but not drift: unhealthy triggers, over limit, stale periods, failed webhooks
    diagnosis.py    one customer on one page: plan, period, counters beside their truth, history, the fix
    usage_report.py Finance's monthly usage report

The admin (billing/admin.py) and the commands (billing/management/commands) call these; usage never
imports them.
"""
