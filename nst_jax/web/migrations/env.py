"""Alembic environment of the web service's database (run by ``db.Database.migrate``).

``migrate`` passes an open connection in ``config.attributes["connection"]``; run from the
``alembic`` command line, ``sqlalchemy.url`` of the config is used.
"""

from alembic import context
from sqlalchemy import engine_from_config, pool

from nst_jax.web import db

config = context.config
target_metadata = db.Base.metadata


def run_migrations(connection) -> None:
  context.configure(connection=connection, target_metadata=target_metadata,
                    render_as_batch=connection.dialect.name == "sqlite")
  with context.begin_transaction():
    context.run_migrations()


def run() -> None:
  connection = config.attributes.get("connection")
  if connection is not None:
    run_migrations(connection)
    return
  engine = engine_from_config(config.get_section(config.config_ini_section, {}),
                              prefix="sqlalchemy.", poolclass=pool.NullPool)
  with engine.connect() as conn:
    run_migrations(conn)


if context.is_offline_mode():
  context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                    literal_binds=True)
  with context.begin_transaction():
    context.run_migrations()
else:
  run()
