"""The index store: one interface per user, SQLite and PostgreSQL backends, migrations, reconcile."""
