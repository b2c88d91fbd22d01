"""SourceHashVersionStrategy: which edits change an op's version and which do not.

Each edit is simulated the way a user makes it: a small project is written into tmp_path, edited
on disk, and versions are computed in fresh interpreters (``_version_worker.py``), so nothing
cached in one process leaks into the comparison.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from memodag import SourceHashVersionStrategy, op, resource
from memodag.versioning import source_index
from memodag.versioning.strategy import OpVersionContext, ResourceVersionContext

WORKER = Path(__file__).with_name("_version_worker.py")

HELPERS = '''
"""Helpers of a throwaway project."""
import functools

LIMIT = 3
UNUSED = 10
TAGS = {"b", "a", "c", "d", "e"}
WEIGHTS = {"x": 1.5, "y": (1, 2), "z": frozenset({"p", "q"})}


def clean(text):
    return text.strip()[:LIMIT]


def unrelated(text):
    return text.upper()


def is_even(n):
    return True if n == 0 else is_odd(n - 1)


def is_odd(n):
    return False if n == 0 else is_even(n - 1)


def traced(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@traced
def shout(text):
    return text.upper() + "!"


@functools.lru_cache(maxsize=None)
def cached_len(text):
    return len(text)


def make_scaler(factor):
    def scale(x):
        return x * factor

    return scale


scale = make_scaler(3)


def make_adder(amount):
    def add(x):
        return x + amount

    return add


add_two = make_adder(2)
square = lambda x: x * x  # noqa: E731


def add_one(x):
    return x + 1


def apply(x, fn=add_one):
    return fn(x)


@functools.singledispatch
def describe(value):
    return "thing"


@describe.register
def _(value: int):
    return "int"


@describe.register(str)
def _describe_text(value):
    return "text"


class Formatter:
    @functools.singledispatchmethod
    def fmt(self, value):
        return str(value)


def _fmt_float(self, value):
    return f"{value:.2f}"


Formatter.fmt.register(float, _fmt_float)


class Tree:
    kind = "oak"

    def __init__(self, children=()):
        self.children = list(children)

    def size(self):
        return 1 + sum(c.size() for c in self.children)

    def grow(self):
        return Tree([self])
'''

OPS = """
import yaml

from memodag import op, resource
from proj import helpers, left, mid, right
from proj.helpers import Tree, clean


@op
def uses_attribute(text: str):
    return helpers.clean(text)


@op
def uses_name(text: str):
    return clean(text) + "?"


@op
def independent(text: str):
    return text[::-1]


@op
def uses_constants(text: str):
    return sorted(helpers.TAGS), helpers.WEIGHTS


@op
def uses_yaml(data):
    return yaml.safe_dump(data)


@op
def uses_recursion(n: int):
    return helpers.is_even(n)


@op
def uses_class(n: int):
    return Tree().grow().size() + n


@op
def uses_lambda_and_closure(x: int):
    return [helpers.square(v) for v in range(x)], helpers.scale(x)


@op
def uses_default(x: int):
    return helpers.apply(x)


@op
def uses_decorated(text: str):
    return helpers.shout(text)


@op
def uses_cached(text: str):
    return helpers.cached_len(text)


@op
def imports_inside(x: int):
    from proj.inner import quad

    return quad(x)


@op
def imports_module_inside(x: int):
    import proj.inner

    return proj.inner.quad(x) + 1


@op
def imports_relative_inside(x: int):
    from . import inner as imported

    return imported.quad(x) + 2


@op
def uses_dispatch(value):
    return helpers.describe(value)


@op
def uses_factory_closure(x: int):
    return helpers.add_two(x)


@op
def uses_same_names(x: int):
    return left.norm(x), right.norm(x), mid.via(x)


@op
def uses_dispatch_method(value):
    return helpers.Formatter().fmt(value)


@op
def with_locals(xs: list):
    total = 0
    for item in xs:
        total += item
    squares = [v * v for v in xs]
    try:
        first = xs[0]
    except IndexError as error:
        first = error

    def scaled(k):
        return [k * s for s in squares]

    return total, scaled(2), first


@resource
def store(init_context):
    return {"limit": helpers.LIMIT}
"""

INNER = """
def quad(x):
    return 4 * x


def other(x):
    return -x
"""

NAMES = [
    "uses_attribute",
    "uses_name",
    "independent",
    "uses_constants",
    "uses_yaml",
    "uses_recursion",
    "uses_class",
    "uses_lambda_and_closure",
    "uses_default",
    "uses_decorated",
    "uses_cached",
    "imports_inside",
    "imports_module_inside",
    "imports_relative_inside",
    "uses_dispatch",
    "uses_dispatch_method",
    "uses_same_names",
    "uses_factory_closure",
    "with_locals",
    "store",
]

BASE = {
    "proj/__init__.py": "",
    "proj/helpers.py": HELPERS,
    "proj/ops.py": OPS,
    "proj/inner.py": INNER,
    "proj/left.py": "def norm(x):\n    return x + 1\n",
    "proj/right.py": "def norm(x):\n    return x - 1\n",
    "proj/mid.py": "from proj.left import norm\n\n\ndef via(x):\n    return norm(x)\n",
}


def write_project(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def edited(files: dict[str, str], file: str, old: str, new: str) -> dict[str, str]:
    assert old in files[file], f"edit target {old!r} not found in {file}"
    return {**files, file: files[file].replace(old, new)}


def compute(
    *roots: Path,
    module: str = "proj.ops",
    names: list[str] = NAMES,
    seeds: tuple[str, ...] | None = None,
    local_roots: list[str] | None = None,
    path: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Versions per project root, each computed in its own fresh interpreter (run in parallel)."""
    procs = []
    for index, root in enumerate(roots):
        spec = {
            "path": [str(root), *(path or [])],
            "module": module,
            "names": names,
            "local_roots": local_roots,
        }
        env = {**os.environ, "PYTHONHASHSEED": seeds[index] if seeds else "random"}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(spec)],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {n for n in before if before[n]["version"] != after[n]["version"]}


@pytest.fixture(scope="module")
def base_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compute(write_project(tmp_path_factory.mktemp("base"), BASE))[0]


LOCALS_BODY = OPS[
    OPS.index("    total = 0") : OPS.index("scaled(2), first") + len("scaled(2), first")
]

REFORMATTED_HELPERS = (
    HELPERS.replace("def clean(text):\n", "# a comment\n\n\ndef clean( text ) :\n")
    .replace(
        "return text.strip()[:LIMIT]", '"""Trim."""\n    return (text.strip()  [ : LIMIT ])  # trim'
    )
    .replace(
        "return 1 + sum(c.size() for c in self.children)",
        "return 1 + sum(\n            c.size()\n            for c in self.children\n        )",
    )
    .replace('kind = "oak"', "kind = 'oak'  # single quotes now")
)

EDITS = [
    # (what, file, old, new, ops whose version must change)
    (
        "helper body",
        "proj/helpers.py",
        "text.strip()[:LIMIT]",
        "text.strip().lower()[:LIMIT]",
        {"uses_attribute", "uses_name"},
    ),
    (
        "unrelated function in the same module",
        "proj/helpers.py",
        "text.upper()\n\n\ndef is_even",
        "text.lower()\n\n\ndef is_even",
        set(),
    ),
    (
        "used constant",
        "proj/helpers.py",
        "LIMIT = 3",
        "LIMIT = 4",
        {"uses_attribute", "uses_name", "store"},
    ),
    ("unused constant", "proj/helpers.py", "UNUSED = 10", "UNUSED = 11", set()),
    (
        "set literal reordered",
        "proj/helpers.py",
        '{"b", "a", "c", "d", "e"}',
        '{"e", "d", "c", "a", "b"}',
        set(),
    ),
    ("nested constant value", "proj/helpers.py", '"y": (1, 2)', '"y": (1, 3)', {"uses_constants"}),
    (
        "mutually recursive helper",
        "proj/helpers.py",
        "return False if n == 0",
        "return n < 0 or False if n == 0",
        {"uses_recursion"},
    ),
    ("class method", "proj/helpers.py", "return 1 + sum(", "return 2 + sum(", {"uses_class"}),
    ("class attribute", "proj/helpers.py", 'kind = "oak"', 'kind = "elm"', {"uses_class"}),
    (
        "module-level lambda",
        "proj/helpers.py",
        "lambda x: x * x",
        "lambda x: x**3",
        {"uses_lambda_and_closure"},
    ),
    (
        "closure cell value",
        "proj/helpers.py",
        "make_scaler(3)",
        "make_scaler(4)",
        {"uses_lambda_and_closure"},
    ),
    (
        "function reached as a default argument",
        "proj/helpers.py",
        "return x + 1",
        "return x + 2",
        {"uses_default"},
    ),
    (
        "decorated helper body",
        "proj/helpers.py",
        'text.upper() + "!"',
        'text.upper() + "!!"',
        {"uses_decorated"},
    ),
    (
        "helper decorator",
        "proj/helpers.py",
        "return fn(*args, **kwargs)",
        "return fn(*args, **kwargs) or None",
        {"uses_decorated"},
    ),
    (
        "helper behind lru_cache",
        "proj/helpers.py",
        "return len(text)",
        "return len(text) + 1",
        {"uses_cached"},
    ),
    ("op body", "proj/ops.py", "text[::-1]", "text[::-2]", {"independent"}),
    (
        "op decorator, docstring and comments",
        "proj/ops.py",
        "@op\ndef independent(text: str):\n",
        '@op(description="Reverse.")\ndef independent(text: str):\n    """Reverse the text."""\n    # why: palindromes\n',
        set(),
    ),
    ("formatting, comments and docstrings", "proj/helpers.py", HELPERS, REFORMATTED_HELPERS, set()),
    (
        "helper imported inside op bodies",
        "proj/inner.py",
        "4 * x",
        "5 * x",
        {"imports_inside", "imports_module_inside", "imports_relative_inside"},
    ),
    ("unused function of a module imported inside", "proj/inner.py", "-x", "x", set()),
    (
        "singledispatch registered implementation",
        "proj/helpers.py",
        'return "int"',
        'return "integer"',
        {"uses_dispatch"},
    ),
    (
        "singledispatch registered type",
        "proj/helpers.py",
        "@describe.register(str)",
        "@describe.register(bytes)",
        {"uses_dispatch"},
    ),
    (
        "singledispatchmethod implementation registered outside the class",
        "proj/helpers.py",
        "{value:.2f}",
        "{value:.3f}",
        {"uses_dispatch_method"},
    ),
    (
        # versions name project code without its module; two reached functions called alike are
        # still told apart, or this edit (no function's source changes) would go unseen
        "a reference switched between two functions of one name",
        "proj/mid.py",
        "from proj.left import norm",
        "from proj.right import norm",
        {"uses_same_names"},
    ),
    (
        "local variables renamed",
        "proj/ops.py",
        LOCALS_BODY,
        LOCALS_BODY.replace("total", "running")
        .replace("item", "element")
        .replace("v * v for v", "w * w for w")
        .replace("squares", "sq")
        .replace("first", "head")
        .replace("error", "exc")
        .replace("for s in", "for t in")
        .replace("k * s", "k * t"),
        set(),
    ),
    (
        "local variable renamed in a class method",
        "proj/helpers.py",
        "sum(c.size() for c in self.children)",
        "sum(child.size() for child in self.children)",
        set(),
    ),
    (
        "closure variable of a factory renamed",
        "proj/helpers.py",
        "def make_adder(amount):\n    def add(x):\n        return x + amount",
        "def make_adder(delta):\n    def add(x):\n        return x + delta",
        set(),
    ),
    (
        "closure value changed",
        "proj/helpers.py",
        "make_adder(2)",
        "make_adder(3)",
        {"uses_factory_closure"},
    ),
    (
        "two locals swapped (not a rename)",
        "proj/ops.py",
        "return total, scaled(2), first",
        "return first, scaled(2), total",
        {"with_locals"},
    ),
    (
        "parameter renamed (the op's interface)",
        "proj/ops.py",
        "def with_locals(xs: list):",
        "def with_locals(values: list):\n    xs = values",
        {"with_locals"},
    ),
]


@pytest.fixture(scope="module")
def edited_versions(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    roots = [
        write_project(tmp_path_factory.mktemp("edit"), edited(BASE, file, old, new))
        for _, file, old, new, _ in EDITS
    ]
    return compute(*roots)


@pytest.mark.parametrize("index", range(len(EDITS)), ids=[e[0] for e in EDITS])
def test_an_edit_changes_exactly_the_ops_that_reach_it(
    index: int, base_versions: dict[str, Any], edited_versions: list[dict[str, Any]]
) -> None:
    expected = EDITS[index][4]
    assert changed(base_versions, edited_versions[index]) == expected


def test_the_reformatting_edit_really_reformats() -> None:
    # Guards the "no change" case above against an edit that silently did nothing.
    assert REFORMATTED_HELPERS.count("#") > HELPERS.count("#")
    assert '"""Trim."""' in REFORMATTED_HELPERS


def test_versions_are_stable_across_hash_seeds_and_locations(tmp_path: Path) -> None:
    first = write_project(tmp_path / "here", BASE)
    second = write_project(tmp_path / "elsewhere" / "deeper", BASE)
    a, b = compute(first, second, seeds=("1", "2"))
    assert a == b
    material = json.dumps(a)
    assert str(tmp_path) not in material


def test_installed_package_counts_by_distribution_version(base_versions: dict[str, Any]) -> None:
    explain = base_versions["uses_yaml"]["explain"]
    pyyaml = f"PyYAML=={importlib.metadata.version('PyYAML')}"
    assert ["package", pyyaml] in [entry[:2] for entry in explain]
    # yaml's own functions are never hashed as source.
    assert not [e for e in explain if e[0] == "function" and e[1].startswith("yaml")]


def test_stdlib_and_builtins_count_by_name(base_versions: dict[str, Any]) -> None:
    kinds = {(e[0], e[1]) for e in base_versions["uses_decorated"]["explain"]}
    assert ("stdlib", "functools.wraps") in kinds
    assert ("function", "proj.helpers:traced.<locals>.wrapper") in kinds
    assert ("function", "proj.helpers:shout") in kinds


def test_recursion_and_self_referencing_class_terminate(base_versions: dict[str, Any]) -> None:
    names = {e[1] for e in base_versions["uses_recursion"]["explain"]}
    assert {"proj.helpers:is_even", "proj.helpers:is_odd"} <= names
    names = {e[1] for e in base_versions["uses_class"]["explain"]}
    assert {"proj.helpers:Tree", "proj.helpers:Tree.grow", "proj.helpers:Tree.size"} <= names


def _fake_distribution(site_dir: Path, version: str, body: str) -> None:
    """An installed-looking package outside site-packages (like an editable install that writes
    no PEP 610 direct_url.json: those that do count as project code)."""
    write_project(site_dir, {"extlib/__init__.py": f"def double(x):\n    return {body}\n"})
    info = site_dir / f"extlib-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: extlib\nVersion: {version}\n")
    (info / "top_level.txt").write_text("extlib\n")


def test_other_editable_projects_count_by_version_unless_listed_as_local(tmp_path: Path) -> None:
    files = {
        "proj/__init__.py": "",
        "proj/ops.py": "import extlib\nfrom memodag import op\n\n@op\ndef calls_lib(x):\n    return extlib.double(x)\n",
    }
    sites = {}
    for name, version, body in [
        ("v1", "1.0", "x * 2"),
        ("v1_edited", "1.0", "x + x"),
        ("v2", "2.0", "x * 2"),
    ]:
        sites[name] = tmp_path / "sites" / name
        _fake_distribution(sites[name], version, body)
    project = write_project(tmp_path / "project", files)
    run = {
        name: compute(project, module="proj.ops", names=["calls_lib"], path=[str(site)])[0][
            "calls_lib"
        ]
        for name, site in sites.items()
    }
    assert ["package", "extlib==1.0"] in [e[:2] for e in run["v1"]["explain"]]
    assert (
        run["v1"]["version"] == run["v1_edited"]["version"]
    )  # source of an installed package is not read
    assert run["v1"]["version"] != run["v2"]["version"]  # its version is
    local = {
        name: compute(
            project,
            module="proj.ops",
            names=["calls_lib"],
            path=[str(sites[name])],
            local_roots=[str(sites[name])],
        )[0]["calls_lib"]
        for name in ("v1", "v1_edited")
    }
    assert ("function", "extlib:double") in {tuple(e[:2]) for e in local["v1"]["explain"]}
    assert local["v1"]["version"] != local["v1_edited"]["version"]


SCRIPT = """
from memodag import SourceHashVersionStrategy, op
from memodag.versioning.strategy import OpVersionContext

LIMIT = 2


def helper(x):
    return x[:LIMIT]


@op
def step(x):
    return helper(x)


if __name__ == "__main__":
    print(SourceHashVersionStrategy().get_op_version(OpVersionContext(step, None)))
"""


def test_a_script_and_the_same_file_loaded_as_a_module_hash_alike(tmp_path: Path) -> None:
    script = write_project(tmp_path, {"pipeline.py": SCRIPT}) / "pipeline.py"
    as_script = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    (as_module,) = compute(tmp_path, module="pipeline", names=["step"])
    assert as_script == as_module["step"]["version"]
    # The CLI loads `-f pipeline.py` under a private name when `pipeline` is already taken.
    spec = importlib.util.spec_from_file_location("memodag_job_file_pipeline_0123abcd", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    strategy = SourceHashVersionStrategy(local_roots=[tmp_path])
    assert strategy.get_op_version(OpVersionContext(module.step, None)) == as_script


# -- in-process: fallbacks, caching, options ------------------------------------------------


def _exec_op(source: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "scratch"}
    exec(source, namespace)
    return op(namespace["body"])


def test_functions_without_source_fall_back_to_their_code_object() -> None:
    strategy = SourceHashVersionStrategy()

    def version(definition: Any) -> str:
        return strategy.get_op_version(OpVersionContext(definition, None))

    same_a = _exec_op("def body(x):\n    return [y + 1 for y in x], (lambda z: z * 2)\n")
    same_b = _exec_op("def body(x):\n    return [y + 1 for y in x], (lambda z: z * 2)\n")
    other_const = _exec_op("def body(x):\n    return [y + 1 for y in x], (lambda z: z * 3)\n")
    other_name = _exec_op("def body(x):\n    return [y + 1 for y in x], (lambda w: w * 2)\n")
    other_operator = _exec_op("def body(x):\n    return [y - 1 for y in x], (lambda z: z * 2)\n")
    assert version(same_a) == version(same_b)
    variants = [same_a, other_const, other_name, other_operator]
    assert len({version(v) for v in variants}) == len(variants)
    assert strategy.explain_op(same_a)[0][:2] == ("op", "scratch:body")


def test_exec_defined_helpers_and_constants_are_still_followed() -> None:
    strategy = SourceHashVersionStrategy()
    base = "LIMIT = {limit}\ndef helper(x):\n    return x[:LIMIT]\ndef body(x):\n    return helper(x)\n"
    versions = [
        strategy.get_op_version(OpVersionContext(_exec_op(base.format(limit=n)), None))
        for n in (3, 3, 4)
    ]
    assert versions[0] == versions[1] != versions[2]


def test_resource_version_follows_helpers(tmp_path: Path) -> None:
    strategy = SourceHashVersionStrategy()
    namespace: dict[str, Any] = {"__name__": "scratch_resources"}
    exec("def connect(url):\n    return url.upper()\n", namespace)

    @resource
    def client(init_context):
        return namespace["connect"]("x")

    @resource
    def no_context():
        return {"ready": True}

    version = strategy.get_resource_version(ResourceVersionContext(client, None))
    assert version and version == strategy.get_resource_version(
        ResourceVersionContext(client, None)
    )
    # A resource without the init-context parameter is wrapped by memodag; its function is reached.
    labels = {e[1] for e in strategy.explain_resource(no_context)}
    assert any(
        label.endswith("test_resource_version_follows_helpers.<locals>.no_context")
        for label in labels
    )


def test_source_is_parsed_once_per_file_and_hashed_once_per_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = "cost_probe_pkg"
    ops = "\n".join(f"@op\ndef op_{i}(x):\n    return shared(x) + {i}\n" for i in range(50))
    source = f"from memodag import op\n\ndef shared(x):\n    return x * 2\n\n{ops}"
    write_project(tmp_path, {f"{package}.py": source})
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(package)
    read: list[str] = []
    dumped: list[str] = []
    real_read, real_dump = source_index.source_cache.read_file, source_index._dump_function

    def counting_read(filename: str, *args: Any) -> list[str]:
        read.append(Path(filename).name)
        return real_read(filename, *args)

    def counting_dump(node: Any, *args: Any, **kwargs: Any) -> str:
        dumped.append(getattr(node, "name", "?"))
        return real_dump(node, *args, **kwargs)

    monkeypatch.setattr(source_index.source_cache, "read_file", counting_read)
    monkeypatch.setattr(source_index, "_dump_function", counting_dump)
    first = SourceHashVersionStrategy(local_roots=[tmp_path])
    ops_defs = [getattr(module, f"op_{i}") for i in range(50)]
    versions = {first.get_op_version(OpVersionContext(d, None)) for d in ops_defs}
    assert len(versions) == 50
    assert read == [f"{package}.py"]
    assert dumped.count("shared") == 1 and len(dumped) == 51
    for _ in range(10_000):
        first.get_op_version(OpVersionContext(module.op_0, None))
    second = SourceHashVersionStrategy(local_roots=[tmp_path])
    assert second.get_op_version(OpVersionContext(module.op_1, None)) in versions
    assert len(dumped) == 51 and read == [f"{package}.py"]


def test_a_long_lived_process_sees_an_edited_and_reloaded_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A notebook with autoreload: same process, same strategy, the file edited on disk.
    monkeypatch.setattr(source_index, "_FRESHNESS_INTERVAL", 0.0)
    package = "reload_probe_pkg"
    text = "from memodag import op\n\ndef helper(x):\n    return x * 2\n\n@op\ndef step(x):\n    return helper(x)\n"
    path = write_project(tmp_path, {f"{package}.py": text}) / f"{package}.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(package)
    strategy = SourceHashVersionStrategy(local_roots=[tmp_path])
    old_step = module.step
    before = strategy.get_op_version(OpVersionContext(old_step, None))
    path.write_text(text.replace("x * 2", "x * 20"))  # same lines, new text
    importlib.reload(module)
    after = strategy.get_op_version(OpVersionContext(module.step, None))
    assert after != before
    # The op object from before the reload looks `helper` up in the reloaded module's globals,
    # so it runs, and is versioned by, the new helper as well.
    assert strategy.get_op_version(OpVersionContext(old_step, None)) == after


def test_python_version_is_counted_only_when_asked() -> None:
    definition = _exec_op("import json\ndef body(x):\n    return json.dumps(sorted(x))\n")
    plain = SourceHashVersionStrategy().explain_op(definition)
    tagged = SourceHashVersionStrategy(include_python_version=True).explain_op(definition)
    stdlib = [e for e in plain if e[0] == "stdlib"]
    assert [e[1] for e in stdlib] == ["builtins.sorted", "json.dumps"]
    assert dict((e[1], e[2]) for e in tagged if e[0] == "stdlib") != dict(
        (e[1], e[2]) for e in stdlib
    )


def test_callable_object_as_op_body_does_not_crash() -> None:
    class Body:
        factor = 2

        def __call__(self, x):
            return x * self.factor

    definition = op(name="callable_body")(Body())
    version = SourceHashVersionStrategy().get_op_version(OpVersionContext(definition, None))
    assert isinstance(version, str) and version
