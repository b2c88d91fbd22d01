"""Run by test_source_hash in a fresh interpreter: import a throwaway project, print its versions.

argv[1] is JSON: {"path": [dirs to put first on sys.path], "module": "proj.ops",
"names": [op or resource attribute names], "local_roots": [...] | null}. Prints JSON
{name: {"version": str, "explain": [[kind, name, digest], ...]}}.
"""

from __future__ import annotations

import importlib
import json
import sys


def main() -> None:
    spec = json.loads(sys.argv[1])
    sys.path[:0] = spec["path"]
    from memodag import ResourceDefinition, SourceHashVersionStrategy
    from memodag.versioning.strategy import OpVersionContext, ResourceVersionContext

    strategy = SourceHashVersionStrategy(local_roots=spec.get("local_roots"))
    module = importlib.import_module(spec["module"])
    result = {}
    for name in spec["names"]:
        definition = getattr(module, name)
        if isinstance(definition, ResourceDefinition):
            version = strategy.get_resource_version(ResourceVersionContext(definition, None))
            explain = strategy.explain_resource(definition)
        else:
            version = strategy.get_op_version(OpVersionContext(definition, None))
            explain = strategy.explain_op(definition)
        result[name] = {"version": version, "explain": explain}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
