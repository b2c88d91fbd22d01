"""Memoized development: change one thing, re-run, and only what depends on it executes.

    memodag job list-versions -f examples/memoized_development/dog_tree.py -c examples/memoized_development/california.yaml
    memodag job execute      -f examples/memoized_development/dog_tree.py -c examples/memoized_development/california.yaml
    memodag job explain      -f examples/memoized_development/dog_tree.py -c examples/memoized_development/maryland.yaml

The two configs differ only in the tree species, so after running California, Maryland re-runs
emit_tree and emit_sentence and reuses emit_dog.
"""

from memodag import SourceHashVersionStrategy, job, op


def capitalize(word: str) -> str:
    # a project-local helper: editing it invalidates every op that calls it
    return word[:1].upper() + word[1:]


@op(config_schema={"dog_breed": str})
def emit_dog(context) -> str:
    return context.op_config["dog_breed"]


@op(config_schema={"tree_species": str})
def emit_tree(context) -> str:
    return context.op_config["tree_species"]


@op
def emit_sentence(dog: str, tree: str) -> str:
    return f"{capitalize(dog)}s like to sit under {tree} trees."


@job(version_strategy=SourceHashVersionStrategy())
def dog_tree_job():
    emit_sentence(emit_dog(), emit_tree())
