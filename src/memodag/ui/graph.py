"""Which nodes feed which: a job's graph at the node level (a mapped op is one node).

From the job's definition when the UI has it (``job_graph``), else from a run's own events
(``events_graph``: the inputs each step loaded). Positions are not computed here: the browser
lays the graph out with dagre (``ui/frontend``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from memodag.ui.steps import node_of

_STAGE_TAG = "memodag/stage"


def job_graph(job: Any) -> dict[str, Any]:
    """``{"nodes": [{"id", "op", "mapped", "stage"}], "edges": [{"source", "target",
    "output", "input"}]}`` of ``job``'s flattened nodes, in call order."""
    from memodag.plan.plan import DefaultSource, ListSource, NodeSource, flatten_graph

    flat = flatten_graph(job.graph)
    nodes = [
        {
            "id": path,
            "op": node.op_def.name,
            "mapped": node.is_mapped,
            "stage": node.tags.get(_STAGE_TAG),
        }
        for path, node in flat.items()
    ]
    edges: list[dict[str, Any]] = []
    for path, node in flat.items():
        for input_name, source in node.inputs.items():
            if isinstance(source, DefaultSource):
                continue
            members = source.members if isinstance(source, ListSource) else (source,)
            for member in members:
                if isinstance(member, NodeSource) and member.node in flat:
                    edges.append(
                        {
                            "source": member.node,
                            "target": path,
                            "output": member.output,
                            "input": input_name,
                        }
                    )
    return {"nodes": nodes, "edges": _unique(edges)}


def events_graph(steps: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The graph a run's events show, for runs of jobs the UI was not given: a node per step's
    node, an edge per input a step loaded (memoized steps load nothing: their edges are
    missing)."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    for step in steps:
        node = step["node"]
        nodes.setdefault(node, {"id": node, "op": node, "mapped": "[" in step["step_key"]})
        for loaded in step["inputs"]:
            address = loaded.get("address") or {}
            source = address.get("step_key")
            if source:
                edges.append(
                    {
                        "source": node_of(str(source)),
                        "target": node,
                        "output": address.get("output_name") or "",
                        "input": loaded.get("name") or "",
                    }
                )
    for edge in edges:
        nodes.setdefault(edge["source"], {"id": edge["source"], "op": edge["source"]})
    return {"nodes": list(nodes.values()), "edges": _unique(edges)}


def _unique(edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[str, ...]] = set()
    kept = []
    for edge in edges:
        key = (edge["source"], edge["target"], edge["output"], edge["input"])
        if key not in seen:
            seen.add(key)
            kept.append(edge)
    return kept


def job_outputs(rows: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """``list_versions`` rows grouped by node: ``{"node", "status", "counts", "outputs"}``, each
    output ``{"step_output", "step", "version", "status", "reasons"}``. A node's status is the
    most urgent of its outputs' (to-be-recomputed before stored)."""
    urgency = ("unversioned", "to-be-recomputed", "depends-on-data", "skipped", "stored")
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        node = node_of(row.step_key or row.step_output)
        entry = grouped.setdefault(
            node, {"node": node, "status": None, "counts": {}, "outputs": []}
        )
        entry["counts"][row.status] = entry["counts"].get(row.status, 0) + 1
        entry["outputs"].append(row.to_dict())
    for entry in grouped.values():
        entry["status"] = next((s for s in urgency if s in entry["counts"]), "stored")
    return grouped
