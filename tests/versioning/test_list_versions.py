"""list_versions / explain: the seed tutorial (dog, tree, sentence) and friends."""

from __future__ import annotations

from memodag import (
    MEMOIZED_RUN_TAG,
    DynamicOut,
    DynamicOutput,
    job,
    list_versions,
    op,
)


@op(version="1", config_schema={"dog_breed": str})
def emit_dog(context):
    return context.op_config["dog_breed"]


@op(version="1", config_schema={"tree_species": str})
def emit_tree(context):
    return context.op_config["tree_species"]


@op(version="1")
def emit_sentence(dog, tree):
    return f"{dog}s sit under {tree} trees"


@job(tags={MEMOIZED_RUN_TAG: "true"})
def dog_tree():
    emit_sentence(emit_dog(), emit_tree())


def config(tree: str) -> dict:
    return {
        "ops": {
            "emit_dog": {"config": {"dog_breed": "poodle"}},
            "emit_tree": {"config": {"tree_species": tree}},
        }
    }


def statuses(rows) -> dict[str, str]:
    return {r.step_output: r.status for r in rows}


def test_before_any_run_everything_is_to_be_recomputed(instance):
    rows = list_versions(dog_tree, config("redwood"), instance, explain=True)
    assert statuses(rows) == {
        "emit_dog.result": "to-be-recomputed",
        "emit_tree.result": "to-be-recomputed",
        "emit_sentence.result": "to-be-recomputed",
    }
    assert all(r.reasons == ("never stored",) for r in rows)
    assert all(r.version for r in rows)


def test_changing_only_the_tree_config(instance):
    dog_tree.execute_in_process(run_config=config("redwood"), instance=instance)
    assert set(statuses(list_versions(dog_tree, config("redwood"), instance)).values()) == {
        "stored"
    }
    rows = list_versions(dog_tree, config("oak"), instance, explain=True)
    assert statuses(rows) == {
        "emit_dog.result": "stored",
        "emit_tree.result": "to-be-recomputed",
        "emit_sentence.result": "to-be-recomputed",
    }
    reasons = {r.step_output: r.reasons for r in rows}
    assert reasons["emit_tree.result"] == (
        "config field 'tree_species' changed ('redwood' -> 'oak')",
    )
    assert reasons["emit_sentence.result"] == ("input 'tree' changed from emit_tree.result",)


def test_versions_match_what_a_run_records(instance):
    rows = {r.step_output: r.version for r in list_versions(dog_tree, config("redwood"), instance)}
    result = dog_tree.execute_in_process(run_config=config("redwood"), instance=instance)
    for node in ("emit_dog", "emit_tree", "emit_sentence"):
        assert result.output_address(node).version == rows[f"{node}.result"]


def test_code_version_change_is_explained(instance):
    dog_tree.execute_in_process(run_config=config("redwood"), instance=instance)

    @op(version="2")
    def emit_sentence(dog, tree):
        return f"{dog} and {tree}"

    @job(name="dog_tree", tags={MEMOIZED_RUN_TAG: "true"})
    def edited():
        emit_sentence(emit_dog(), emit_tree())

    rows = {
        r.step_output: r for r in list_versions(edited, config("redwood"), instance, explain=True)
    }
    assert rows["emit_sentence.result"].status == "to-be-recomputed"
    assert rows["emit_sentence.result"].reasons == (
        "code version of op 'emit_sentence' changed (1 -> 2)",
    )


def test_mapped_steps_appear_once_their_fan_out_is_stored(instance):
    @op(version="1", out=DynamicOut())
    def pieces():
        for i in range(3):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op(version="1")
    def double(x):
        return 2 * x

    @op(version="1")
    def total(xs):
        return sum(xs)

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def fan():
        total(pieces().map(double).collect())

    before = list_versions(fan, None, instance, explain=True)
    pending = {r.step_output: r for r in before if r.version is None}
    assert set(pending) == {"double[*].result", "total.result"}
    assert all(
        "depends on a dynamic output not yet produced" in r.reasons[0] for r in pending.values()
    )
    fan.execute_in_process(instance=instance)
    after = statuses(list_versions(fan, None, instance))
    assert after == {
        "pieces.result": "stored",
        "double[k0].result": "stored",
        "double[k1].result": "stored",
        "double[k2].result": "stored",
        "total.result": "stored",
    }


def test_unversioned_ops_are_reported(instance):
    @op
    def loose():
        return 1

    @job
    def plain():
        loose()

    (row,) = list_versions(plain, None, instance, explain=True)
    assert row.status == "unversioned"
    assert "no version" in row.reasons[0]
