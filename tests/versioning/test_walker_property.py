"""Property: what ``list_versions`` says a memoized run will recompute is what the run executes.

Over generated job shapes (chains, diamonds, fan-outs collected directly or after mapped ops,
nested fan-outs, collectors with consumers), with early cutoff off and on, and random edits of
configs and op versions between runs. Ops are deterministic and tiny, and their values wrap
modulo 3, so edits often yield the same data again (what early cutoff is for).
"""

from __future__ import annotations

import fnmatch
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memodag import MEMOIZED_RUN_TAG, DynamicOut, DynamicOutput, Instance, job, list_versions, op

SEGMENTS = ("chain", "diamond", "fan_direct", "fan_mapped", "fan_consumer", "nested_fan")


class JobFactory:
    """Builds the job for ``shape`` with the current op versions; records every op's name."""

    def __init__(self, shape: list[str], cutoff: bool) -> None:
        self.shape = shape
        self.cutoff = cutoff
        self.versions: dict[str, str] = {}
        self.names: list[str] = []

    def _op(self, name: str, fn: Any, dynamic: bool = False) -> Any:
        self.names.append(name)
        version = self.versions.setdefault(name, "1")
        kwargs: dict[str, Any] = {"name": name, "version": version, "config_schema": {"c": int}}
        if dynamic:
            kwargs["out"] = DynamicOut()
        return op(**kwargs)(fn)

    def source(self, name: str) -> Any:
        def body(context):
            return context.op_config["c"] % 3

        return self._op(name, body)

    def unary(self, name: str) -> Any:
        def body(context, x):
            return (x + context.op_config["c"]) % 3

        return self._op(name, body)

    def binary(self, name: str) -> Any:
        def body(context, a, b):
            return (a + b + context.op_config["c"]) % 3

        return self._op(name, body)

    def fan(self, name: str) -> Any:
        def body(context, x):
            for i in range(1 + (x + context.op_config["c"]) % 3):
                yield DynamicOutput((x + i) % 3, mapping_key=f"k{i}")

        return self._op(name, body, dynamic=True)

    def collector(self, name: str) -> Any:
        def body(context, xs):
            return (sum(xs) + context.op_config["c"]) % 3

        return self._op(name, body)

    def build(self) -> Any:
        self.names = []
        factory = self

        def graph():
            x = factory.source("src")()
            for i, segment in enumerate(factory.shape):
                if segment == "chain":
                    x = factory.unary(f"c{i}")(x)
                elif segment == "diamond":
                    left = factory.unary(f"d{i}l")(x)
                    right = factory.unary(f"d{i}r")(x)
                    x = factory.binary(f"d{i}j")(left, right)
                elif segment == "fan_direct":
                    x = factory.collector(f"g{i}")(factory.fan(f"f{i}")(x).collect())
                elif segment in ("fan_mapped", "fan_consumer"):
                    mapped = factory.fan(f"f{i}")(x).map(factory.unary(f"m{i}"))
                    x = factory.collector(f"g{i}")(mapped.collect())
                    if segment == "fan_consumer":
                        x = factory.unary(f"a{i}")(x)
                else:
                    inner_fan = factory.fan(f"if{i}")
                    inner_map = factory.unary(f"im{i}")
                    inner_gather = factory.collector(f"ig{i}")

                    def per_piece_graph(piece, fan=inner_fan, each=inner_map, gather=inner_gather):
                        return gather(fan(piece).map(each).collect())

                    per_piece = factory.fan(f"f{i}")(x).map(per_piece_graph)
                    x = factory.collector(f"g{i}")(per_piece.collect())
            factory.unary("end")(x)

        graph.__name__ = "generated"
        return job(name="generated", tags={MEMOIZED_RUN_TAG: "true"}, early_cutoff=self.cutoff)(
            graph
        )


def matches(step_key: str, row_key: str) -> bool:
    if "*" not in row_key:
        return step_key == row_key
    return fnmatch.fnmatchcase(step_key, row_key.replace("[", "[[]"))


edits = st.lists(
    st.tuples(
        st.dictionaries(st.integers(0, 40), st.integers(0, 5), max_size=3),  # config edits
        st.sets(st.integers(0, 40), max_size=2),  # version bumps
    ),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    shape=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3),
    cutoff=st.booleans(),
    rounds=edits,
)
def test_list_versions_predicts_what_the_memoized_run_executes(
    shape: list[str], cutoff: bool, rounds: list[tuple[dict[int, int], set[int]]]
) -> None:
    factory = JobFactory(shape, cutoff)
    config: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        instance = Instance.from_url(
            f"sqlite:///{Path(tmp) / 'instance.db'}", storage_dir=Path(tmp) / "storage"
        )
        try:
            for changes, bumps in [({}, set()), *rounds]:
                job_def = factory.build()
                names = list(factory.names)
                for index, value in changes.items():
                    config[names[index % len(names)]] = value
                for index in bumps:
                    name = names[index % len(names)]
                    factory.versions[name] = str(int(factory.versions[name]) + 1)
                job_def = factory.build()
                run_config = {"ops": {n: {"config": {"c": config.get(n, 0)}} for n in names}}
                rows = list_versions(job_def, run_config, instance)
                result = job_def.execute_in_process(run_config=run_config, instance=instance)
                executed = {k for k, s in result.step_status.items() if s == "success"}
                memoized = {k for k, s in result.step_status.items() if s == "memoized"}
                by_status: dict[str, set[str]] = {}
                for row in rows:
                    step_key = row.step_output.rsplit(".", 1)[0]
                    by_status.setdefault(row.status, set()).add(step_key)
                recompute = by_status.get("to-be-recomputed", set())
                maybe = by_status.get("depends-on-data", set())
                assert "unversioned" not in by_status, rows
                assert by_status.get("stored", set()) <= memoized, (rows, result.step_status)
                assert {k for k in recompute if "*" not in k} <= executed, (rows, executed)
                for key in executed:
                    assert any(matches(key, r) for r in recompute | maybe), (key, rows)
                if not cutoff:
                    assert not maybe, rows
                    # without early cutoff the prediction is exact: nothing is left to data
                    for key in memoized:
                        assert not any(matches(key, r) for r in recompute), (key, rows)
        finally:
            instance.close()
