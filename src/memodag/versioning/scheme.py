"""The version scheme: which way of computing versions produced a stored output.

``VERSION_SCHEME`` is bumped by any change to how versions are computed (what goes into a
recipe, how it is hashed, how an op's code is hashed). Every index entry records the scheme it was
computed by, and a stored output counts as stored only under its own scheme: after an upgrade
that bumps it, outputs stored by the older scheme are recomputed once (never reused under a
version that may now mean something else), and the run says so once. See docs/versioning.md.
"""

from __future__ import annotations

#: bump on every change to how versions are computed; 1 is every release up to memodag 0.1
VERSION_SCHEME = 1


def older_scheme_notice(job_name: str, outputs: int) -> str:
    """The run's one warning when ``outputs`` stored outputs of ``job_name`` are of another scheme."""
    were = "output was" if outputs == 1 else "outputs were"
    return (
        f"{outputs} stored {were} computed by an older memodag, which computed versions another "
        f"way (this memodag uses version scheme {VERSION_SCHEME}): job '{job_name}' recomputes "
        "them, once, when their steps next run"
    )
