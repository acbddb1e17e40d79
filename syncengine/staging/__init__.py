"""The staging database: what the engine keeps between runs (SQLAlchemy 2 + Alembic).

``models`` declares the tables, ``db`` opens engines and runs migrations, ``repository`` reads
and writes plain data (``syncengine.domain`` types and small records) with no business rules.
"""
