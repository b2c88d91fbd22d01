"""Two stages of tables in DuckDB: orders loaded with pandas, a cleaning step handed over in
memory (inline), a polars aggregate, a SQL task.

    memodag job execute -f warehouse.py    # tables in .memodag/tables.duckdb (the instance home)
    python -c "import duckdb; print(duckdb.connect('.memodag/tables.duckdb', read_only=True).sql('SELECT * FROM model.top_customers'))"

A second run recomputes nothing (the lazy SQL task's body runs, finds its query's table stored
and executes nothing); change an op and only it and what depends on it run again. The inline
table ``valid_orders`` is never written: it runs again only when ``by_customer`` must.
"""

from __future__ import annotations

import pandas as pd
import polars as pl
import sqlalchemy as sa

from memodag import Stage, Table, job, materialize


@materialize
def orders():
    frame = pd.DataFrame(
        {
            "order_id": range(1, 7),
            "customer_id": [1, 1, 2, 3, 3, 3],
            "amount": [10.0, 5.5, 7.25, 1.0, 2.0, 3.0],
        }
    )
    return Table(frame, name="orders", primary_key="order_id", indexes=[["customer_id"]])


@materialize(input_type=pd.DataFrame)
def valid_orders(orders):
    # handed to by_customer in memory (inline): no database write, and no view in the stage
    return Table(orders[orders["amount"] > 0], inline=True)


@materialize(input_type=pl.DataFrame)
def by_customer(orders):
    totals = orders.group_by("customer_id").agg(pl.col("amount").sum().alias("total"))
    return Table(totals.sort("customer_id"), name="by_customer", primary_key="customer_id")


@materialize(lazy=True)
def top_customers(by_customer: sa.Table):
    # a lazy SQL task: this body runs on every run and only builds the query; the query runs
    # inside the database (CREATE TABLE ... AS SELECT) only when its version - the rendered
    # query and its input's version - has no table yet
    query = (
        sa.select(by_customer).where(by_customer.c.total > 6).order_by(by_customer.c.total.desc())
    )
    return Table(query, name="top_customers")


@job
def warehouse():
    with Stage("raw"):
        o = orders()
    with Stage("model"):
        top_customers(by_customer(valid_orders(o)))
