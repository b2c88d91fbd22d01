"""Dynamic outputs through composition on worker processes: mapped graphs, a graph returning a
dynamic output, one op collecting two fan-outs, a fan-in list."""

from __future__ import annotations

import os

from pipelines import composed_fan_out, lines, marks_config


def test_composed_fan_outs_run_their_clones_on_workers(parallel_executor, instance, tmp_path):
    run_config = {
        **marks_config(tmp_path),
        "ops": {
            "split_in_graph": {"ops": {"split": {"config": {"n": 3}}}},
            "other": {"config": {"n": 2}},
        },
        "execution": {parallel_executor.name: {"config": dict(parallel_executor.preset_config)}},
    }
    result = composed_fan_out.execute_in_process(run_config=run_config, instance=instance)

    assert result.success
    fourth_powers = [i**4 for i in range(3)]
    assert result.output_for_node("as_pair") == [fourth_powers, [0, 1]]
    assert result.output_for_node("fan_in") == [
        [sum(fourth_powers), sum(fourth_powers)],
        [fourth_powers, [0, 1]],
    ]
    clones = [lines(tmp_path, f"square_twice.square_again[k{i}]") for i in range(3)]
    assert all(len(c) == 1 for c in clones)
    assert os.getpid() not in {pid for c in clones for pid, _ in c}
