"""Tables: op outputs stored as database tables, grouped in stages committed atomically.

Holds the table store interface (``store.py``), the io manager that drives a store
(``io_manager.py``), frame conversions (``convert.py``) and the DuckDB store (``duckdb.py``).
Nothing here imports pandas, polars, pyarrow, SQLAlchemy or a driver at module level.
Semantics: docs/tables.md.
"""
