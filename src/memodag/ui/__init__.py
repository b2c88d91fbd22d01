"""The web UI (``memodag ui``): a read-only view of the instance's runs and of a job's versions.

``steps`` folds a run's event log into per-step and per-node states, ``graph`` lays out which
nodes feed which (from the job's definition, else from the events), ``service`` answers the JSON
API from the instance and the dry run of ``list_versions``, ``server`` is the Starlette app.
Importing this package imports neither Starlette nor uvicorn: ``server`` does, when it is run.
"""
