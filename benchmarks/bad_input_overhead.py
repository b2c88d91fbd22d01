"""What the bad-input checks cost, as ratios measured in this process (docs/reliability.md).

    PYTHONPATH=src TMPDIR=/dev/shm python benchmarks/bad_input_overhead.py

- the path check per stored output (``PathIOManager.path_for``: names and containment) against
  joining the same path unchecked, and against one whole step of a chain run;
- the config limits check against validating the same config (``resolve_run_config``);
- the YAML loader with limits against ``yaml.safe_load`` on a typical config file;
- refusing a 12-level alias bomb (absolute time).
Medians of 7 rounds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import yaml

from memodag import InitResourceContext, fs_io_manager, job, op
from memodag.definitions.config import check_config_limits
from memodag.errors import ConfigError
from memodag.plan.run_config import load_run_config_files, resolve_run_config
from memodag.storage.instance import Instance
from memodag.storage.io_manager import OutputContext


def median_seconds(fn, rounds: int = 7) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


@op
def inc(n: int) -> int:
    return n + 1


@op
def start() -> int:
    return 0


def chain(length: int):
    @job
    def chained():
        value = start()
        for _ in range(length):
            value = inc(value)

    return chained


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="memodag-bench-"))
    manager = fs_io_manager.resource_fn(
        InitResourceContext(
            resource_config={"base_dir": str(tmp / "b"), "serializer": "pickle"}, resources=None
        )
    )
    contexts = [OutputContext(f"inc_{i}", "result", "run-1234") for i in range(10_000)]
    ext = manager.default_serializer.extension
    checked = median_seconds(lambda: [manager.path_for(c) for c in contexts]) / len(contexts)
    unchecked = median_seconds(
        lambda: [
            manager.store.join(manager.base, c.run_id, f"{c.step_key}.{c.name}{ext}")
            for c in contexts
        ]
    ) / len(contexts)

    instance = Instance.from_url(f"sqlite:///{tmp / 'i.db'}", storage_dir=tmp / "storage")
    chained = chain(200)
    chained.execute_in_process(instance=instance)  # warm
    step = median_seconds(lambda: chained.execute_in_process(instance=instance), 3) / 201

    print(
        f"path check per output: {(checked - unchecked) * 1e6:.2f} us "
        f"(path_for {checked * 1e6:.2f} us vs unchecked join {unchecked * 1e6:.2f} us); "
        f"one chain step {step * 1e6:.0f} us -> {100 * (checked - unchecked) / step:.2f}% of a step"
    )

    @op(config_schema={"rows": [dict]})
    def configured(context) -> int:
        return len(context.op_config["rows"])

    @job
    def with_config():
        configured()

    config = {
        "ops": {
            "configured": {
                "config": {
                    "rows": [
                        {"id": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(10_000)
                    ]
                }
            }
        }
    }
    limits = median_seconds(lambda: check_config_limits(config))
    resolve = median_seconds(lambda: resolve_run_config(with_config, config))
    print(
        f"config limits on a 10,000-row config: {limits * 1e3:.2f} ms; "
        f"resolve_run_config (which includes it) {resolve * 1e3:.2f} ms "
        f"-> {100 * limits / resolve:.0f}% of it"
    )

    typical = tmp / "typical.yaml"
    typical.write_text(
        yaml.safe_dump(
            {
                "ops": {
                    f"op_{i}": {"config": {"path": f"/data/{i}.csv", "limit": i, "flags": [1, 2]}}
                    for i in range(200)
                },
                "resources": {"io_manager": {"config": {"base_dir": "/data/out"}}},
            }
        )
    )
    text = typical.read_text()
    limited = median_seconds(lambda: load_run_config_files([typical]))
    plain = median_seconds(lambda: yaml.safe_load(text))
    print(
        f"YAML with limits {limited * 1e3:.1f} ms vs yaml.safe_load {plain * 1e3:.1f} ms "
        f"(ratio {limited / plain:.2f})"
    )

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 12):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    bomb = tmp / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")

    def refuse() -> None:
        try:
            load_run_config_files([bomb])
        except ConfigError:
            return
        raise AssertionError("the bomb was not refused")

    print(
        f"alias bomb ({len(bomb.read_bytes())} bytes, 10**12 strings expanded) refused in "
        f"{median_seconds(refuse) * 1e3:.1f} ms"
    )
    instance.close()


if __name__ == "__main__":
    main()
