"""Versions are pinned: a faster way of computing them must compute the very same digests.

A change here re-runs every stored output of every user: it needs a version-scheme bump
(versioning/scheme.py), never a silent edit of these values.
"""

from __future__ import annotations

from memodag import (
    MEMOIZED_RUN_TAG,
    DynamicOut,
    DynamicOutput,
    Instance,
    job,
    list_versions,
    op,
    resource,
)


@resource(version="r1", config_schema={"url": str})
def database(context):
    return context.resource_config["url"]


@op(version="1", config_schema={"n": int})
def numbers(context):
    return list(range(context.op_config["n"]))


@op(version="1", out=DynamicOut())
def split(xs):
    for x in xs:
        yield DynamicOutput(x, mapping_key=f"k{x}")


@op(version="2", required_resource_keys={"database"})
def scale(context, x, factor=3):
    return x * factor


@op(version="1")
def total(xs):
    return sum(xs)


@op(version="1")
def report(numbers, total):
    return f"{len(numbers)}: {total}"


def _table_state(context):
    return {"table": context.op_config["table"], "rows": 3, "updated": [2026, 1, 2.5]}


# version scheme 2: a declared data version, and a mapping whose order is data
@op(version="1", config_schema={"table": str, "weights": dict}, data_version=_table_state)
def weighted(context):
    return list(context.op_config["weights"])


@job(tags={MEMOIZED_RUN_TAG: "true"}, resource_defs={"database": database})
def pinned():
    xs = numbers()
    report(xs, total(split(xs).map(scale).collect()))
    weighted()


RUN_CONFIG = {
    "ops": {
        "numbers": {"config": {"n": 3}},
        "weighted": {"config": {"table": "t", "weights": {"b": 2, "a": 1}}},
    },
    "resources": {"database": {"config": {"url": "sqlite://"}}},
}

PIECES = {
    "split.result[k0]": "84a526a7f9fc8ee8541c",
    "split.result[k1]": "380bd52be90818f8aed2",
    "split.result[k2]": "824aa1f80fa22b9d2b05",
}

# computed by version scheme 2 (unreleased scheme 2 added ``weighted`` and the declared outputs,
# their order and kinds, to every step version); see the module docstring before changing one
GOLDEN = {
    "numbers.result": "de0b143e4d42f93dfcdf",
    "split.result": "038319fb91b86cd2a261",
    "scale[k0].result": "31c65301bde6183a0180",
    "scale[k1].result": "fb08906ffc38e6794290",
    "scale[k2].result": "c9768fc2ba8c74eb55ca",
    "total.result": "f176adf19817d7e04f39",
    "report.result": "586fb3567cff3450ffbb",
    "weighted.result": "ab6dc8fd6e173d1aa343",
}


def test_versions_are_the_released_ones(instance: Instance) -> None:
    first = pinned.execute_in_process(run_config=RUN_CONFIG, instance=instance)
    addresses = [
        e.data["address"] for e in first.all_events if e.event_type.value == "HANDLED_OUTPUT"
    ]
    recorded = {
        f"{a['step_key']}.{a['output_name']}"
        + (f"[{a['mapping_key']}]" if a["mapping_key"] else ""): a["version"]
        for a in addresses
    }
    assert recorded == {**{k: v for k, v in GOLDEN.items() if k != "split.result"}, **PIECES}
    # the walk computes them alike (list-versions) and a rerun finds every one stored
    rows = list_versions(pinned, RUN_CONFIG, instance)
    assert {r.step_output: r.version for r in rows} == GOLDEN
    assert {r.status for r in rows} == {"stored"}
    rerun = pinned.execute_in_process(run_config=RUN_CONFIG, instance=instance)
    assert rerun.executed_step_keys == [] and len(rerun.memoized_step_keys) == 8


def test_mapping_order_and_the_data_version_are_in_the_version(instance: Instance) -> None:
    # scheme 2: a reordered mapping is another config, another data version another version
    def version(weights: dict[str, int], table: str) -> str | None:
        config = {"ops": {"weighted": {"config": {"table": table, "weights": weights}}}}
        (row,) = list_versions(weighted_only, config, instance)
        return row.version

    assert version({"b": 2, "a": 1}, "t") == GOLDEN["weighted.result"]
    assert version({"a": 1, "b": 2}, "t") != GOLDEN["weighted.result"]
    assert version({"b": 2, "a": 1}, "u") != GOLDEN["weighted.result"]


@job(name="pinned", tags={MEMOIZED_RUN_TAG: "true"})
def weighted_only():
    weighted()
