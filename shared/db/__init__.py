"""The database: SQLAlchemy 2.0 models, engine construction and Alembic migrations."""
