from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent / "sql"  # frozen, never edited (SPEC §13; CONTRIBUTING.md)


class Migration(migrations.Migration):
    """The raw-SQL cascades 0005 meant to install on its own tables' foreign keys (see the SQL file)."""

    dependencies = [("billing", "0006_credit_webhook_roles")]

    operations = [
        migrations.RunSQL((SQL / "0007_cascade.sql").read_text(), reverse_sql=migrations.RunSQL.noop)
    ]
