"""Adopting an existing product database (SPEC §2): the preflight, the additive install, the uninstall.

The product's tables are usage's product models (``PRODUCT_MODELS``): adoption finds them already
there, owned and written by the product. Everything else billing-ops declares (its reconciliation
runs, the billing tables, Django's own) is billing-ops' and is created by adoption.
"""

from usage.models import Customer, Preset, PresetUsage, Project, UsageEvent, UsageTracking

PRODUCT_MODELS = (Customer, Project, Preset, PresetUsage, UsageEvent, UsageTracking)
