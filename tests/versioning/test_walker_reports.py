"""list-versions/explain are a dry run of the engine's walk: what they say a run does, it does.

Covers the cases the old, separate report walk got wrong: the consumer of a collector, explaining
an older config against that config's stored outputs, mapped ops naming the edited helper, and
resources showing their config old -> new.
"""

from __future__ import annotations

import importlib
import sys

from memodag import (
    MEMOIZED_RUN_TAG,
    DynamicOut,
    DynamicOutput,
    job,
    list_versions,
    op,
    resource,
)


@op(version="1", out=DynamicOut())
def fan():
    for i in range(3):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op(version="1")
def up(x):
    return x + 1


@op(version="1")
def gather(xs):
    return sum(xs)


@op(version="1", config_schema={"factor": int})
def after(context, total):
    return total * context.op_config["factor"]


@job(tags={MEMOIZED_RUN_TAG: "true"})
def collected():
    after(gather(fan().map(up).collect()))


def factor(n: int) -> dict:
    return {"ops": {"after": {"config": {"factor": n}}}}


def statuses(rows) -> dict[str, str]:
    return {r.step_output: r.status for r in rows}


def test_the_consumer_of_a_collector_is_versioned_before_and_after_a_run(instance):
    before = statuses(list_versions(collected, factor(2), instance))
    assert before == {
        "fan.result": "to-be-recomputed",
        "up[*].result": "to-be-recomputed",
        "gather.result": "to-be-recomputed",
        "after.result": "to-be-recomputed",
    }
    collected.execute_in_process(run_config=factor(2), instance=instance)
    stored = list_versions(collected, factor(2), instance)
    assert set(statuses(stored).values()) == {"stored"}
    assert len(stored) == 6 and all(r.version for r in stored)

    rows = {r.step_output: r for r in list_versions(collected, factor(3), instance, explain=True)}
    assert {k: r.status for k, r in rows.items() if r.status != "stored"} == {
        "after.result": "to-be-recomputed"
    }
    assert rows["after.result"].reasons == ("config field 'factor' changed (2 -> 3)",)
    rerun = collected.execute_in_process(run_config=factor(3), instance=instance)
    assert [k for k, s in rerun.step_status.items() if s == "success"] == ["after"]


def test_versions_reported_for_a_collector_consumer_are_those_the_run_records(instance):
    collected.execute_in_process(run_config=factor(2), instance=instance)
    predicted = {r.step_output: r.version for r in list_versions(collected, factor(5), instance)}
    result = collected.execute_in_process(run_config=factor(5), instance=instance)
    assert predicted["after.result"] is not None
    assert result.output_address("after").version == predicted["after.result"]


def test_explaining_an_older_config_compares_with_what_that_config_stored(instance):
    """California -> Maryland -> California: the sentence is explained against California's."""
    sentence_version = {"v": "1"}

    @op(version="1", config_schema={"tree": str})
    def tree(context):
        return context.op_config["tree"]

    def make_job():
        @op(name="sentence", version=sentence_version["v"])
        def sentence(tree):
            return f"under the {tree}"

        @job(name="trees", tags={MEMOIZED_RUN_TAG: "true"})
        def trees():
            sentence(tree())

        return trees

    def cfg(species: str) -> dict:
        return {"ops": {"tree": {"config": {"tree": species}}}}

    make_job().execute_in_process(run_config=cfg("redwood"), instance=instance)
    make_job().execute_in_process(run_config=cfg("white oak"), instance=instance)
    sentence_version["v"] = "2"
    rows = {r.step_output: r for r in list_versions(make_job(), cfg("redwood"), instance, True)}
    assert rows["tree.result"].status == "stored"
    assert rows["sentence.result"].reasons == ("code version of op 'sentence' changed (1 -> 2)",)


def test_a_resource_change_shows_its_config_old_and_new(instance):
    @resource(config_schema={"schema": str, "password": str})
    def warehouse(init_context):
        return init_context.resource_config["schema"]

    @op(version="1", required_resource_keys={"warehouse"})
    def load(context):
        return context.resources.warehouse

    @job(resource_defs={"warehouse": warehouse}, tags={MEMOIZED_RUN_TAG: "true"})
    def loading():
        load()

    def cfg(schema: str, password: str) -> dict:
        return {"resources": {"warehouse": {"config": {"schema": schema, "password": password}}}}

    loading.execute_in_process(run_config=cfg("raw", "s3cret"), instance=instance)
    (row,) = list_versions(loading, cfg("clean", "s3cret"), instance, explain=True)
    assert row.reasons == ("resource 'warehouse' config field 'schema' changed ('raw' -> 'clean')",)
    (row,) = list_versions(loading, cfg("raw", "other"), instance, explain=True)
    assert row.status == "to-be-recomputed"
    assert "s3cret" not in row.reasons[0] and "other" not in row.reasons[0]
    assert row.reasons[0].startswith("resource 'warehouse' changed")


def _edited_project(tmp_path, monkeypatch, instance, package: str, source: str, job_name: str):
    """Write ``package.jobs`` from ``source`` (``{root}``: the local root), run ``job_name`` once,
    then edit the helper ``shout`` and return the re-imported, edited job."""
    folder = tmp_path / package
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "jobs.py").write_text(source.format(root=str(tmp_path)))
    monkeypatch.syspath_prepend(str(tmp_path))
    # the source index looks for edited files at most once a second; these tests edit at once
    monkeypatch.setattr("memodag.versioning.source_index._FRESHNESS_INTERVAL", 0.0)
    getattr(importlib.import_module(f"{package}.jobs"), job_name).execute_in_process(
        instance=instance
    )
    (folder / "jobs.py").write_text(
        source.format(root=str(tmp_path)).replace("word.upper()", "word.upper() + '!'")
    )
    sys.modules.pop(f"{package}.jobs")
    return getattr(importlib.import_module(f"{package}.jobs"), job_name)


def test_explain_names_the_helper_that_changed(instance, tmp_path, monkeypatch):
    source = (
        "from memodag import SourceHashVersionStrategy, job, op\n\n"
        "def shout(word):\n    return word.upper()\n\n"
        "@op\ndef greet():\n    return shout('hi')\n\n"
        "@job(version_strategy=SourceHashVersionStrategy(local_roots=[{root!r}]))\n"
        "def hello():\n    greet()\n"
    )
    edited = _edited_project(tmp_path, monkeypatch, instance, "proj_explain", source, "hello")
    (row,) = list_versions(edited, None, instance, explain=True)
    assert row.status == "to-be-recomputed"
    assert "code of op 'greet' changed" in row.reasons[0]
    assert "function proj_explain.jobs:shout edited" in row.reasons[0], row.reasons


def test_a_mapped_op_names_the_helper_that_changed(instance, tmp_path, monkeypatch):
    source = (
        "from memodag import DynamicOut, DynamicOutput, SourceHashVersionStrategy, job, op\n\n"
        "def shout(word):\n    return word.upper()\n\n"
        "@op(out=DynamicOut())\ndef words():\n"
        "    for w in ('a', 'b'):\n        yield DynamicOutput(w, mapping_key=w)\n\n"
        "@op\ndef loud(word):\n    return shout(word)\n\n"
        "@job(version_strategy=SourceHashVersionStrategy(local_roots=[{root!r}]))\n"
        "def speech():\n    words().map(loud)\n"
    )
    edited = _edited_project(tmp_path, monkeypatch, instance, "proj_mapped", source, "speech")
    rows = {r.step_output: r for r in list_versions(edited, None, instance, explain=True)}
    assert rows["words.result"].status == "stored"
    for key in ("loud[a].result", "loud[b].result"):
        assert rows[key].status == "to-be-recomputed"
        assert rows[key].reasons == (
            "code of op 'loud' changed: function proj_mapped.jobs:shout edited",
        ), rows[key].reasons


def test_with_early_cutoff_a_consumer_of_a_rerun_depends_on_its_data(instance):
    @op(version="1", config_schema={"n": int})
    def parity(context):
        return context.op_config["n"] % 2

    @op(version="1")
    def describe(p):
        return "odd" if p else "even"

    @job(tags={MEMOIZED_RUN_TAG: "true"}, early_cutoff=True)
    def cut():
        describe(parity())

    def cfg(n: int) -> dict:
        return {"ops": {"parity": {"config": {"n": n}}}}

    cut.execute_in_process(run_config=cfg(1), instance=instance)
    rows = {r.step_output: r for r in list_versions(cut, cfg(3), instance, explain=True)}
    assert rows["parity.result"].status == "to-be-recomputed"
    assert rows["describe.result"].status == "depends-on-data"
    assert "parity.result" in rows["describe.result"].reasons[0]
    # same data (3 is odd, like 1): the run bears the prediction out by memoizing describe
    rerun = cut.execute_in_process(run_config=cfg(3), instance=instance)
    assert rerun.step_status == {"parity": "success", "describe": "memoized"}


def test_a_consumer_of_an_optional_output_not_yielded_is_reported_skipped(instance):
    from memodag import Out, Output

    @op(version="1", out={"always": Out(), "sometimes": Out(is_required=False)})
    def produce():
        yield Output(1, "always")

    @op(version="1")
    def use(x):
        return x

    @op(version="1")
    def use_optional(x):
        return x

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def optional():
        always, sometimes = produce()
        use(always)
        use_optional(sometimes)

    optional.execute_in_process(instance=instance)
    rows = statuses(list_versions(optional, None, instance))
    assert rows == {
        "produce.always": "stored",
        "produce.sometimes": "stored",
        "use.result": "stored",
        "use_optional.result": "skipped",
    }
    again = optional.execute_in_process(instance=instance)
    assert again.step_status["use_optional"] == "skipped"
