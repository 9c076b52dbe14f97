from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Demo data, example payloads and the demo logins (SPEC §3, §9): apart from production.

    Installed for its `demo_data` command; nothing in billing or usage imports it.
    """

    name = "demo"
    verbose_name = "Demo"
