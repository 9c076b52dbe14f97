"""Finance's workbench (SPEC §7 "Finance"): monthly usage by plan, over-limit customers, overage credit
sold and consumed, CSV exports and trend charts. Read-only: nothing here writes a row.

selectors.py   the reads (per-period counters and the credit ledger, never raw usage events)
views.py       the admin pages and their streamed CSV exports
charts.py      server-side SVG charts (no JavaScript, no CDN)
"""
