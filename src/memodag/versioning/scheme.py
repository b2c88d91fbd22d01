"""The version scheme: which way of computing versions produced a stored output.

``VERSION_SCHEME`` is bumped by any change to how versions are computed (what goes into a
recipe, how it is hashed, how an op's code is hashed). Every index entry records the scheme it was
computed by, and a stored output counts as stored only under its own scheme: after an upgrade
that bumps it, outputs stored by the older scheme are recomputed once (never reused under a
version that may now mean something else), and the run says so once. See docs/versioning.md.
"""

from __future__ import annotations

#: bump on every change to how versions are computed; 1 is every release up to memodag 0.1;
#: 2: mapping order counts in config and data hashes, declared data versions (``data_version=``),
#: source hashes follow imports in op bodies and singledispatch, ignore local names and modules;
#: an op's declared outputs (names in order, kinds) are in every step version
VERSION_SCHEME = 2


def older_scheme_notice(job_name: str) -> str:
    """The run's one warning when stored outputs of ``job_name`` are of an older scheme.

    It names no count: a run looks stored outputs up as their steps become ready (a fan-out's
    pieces after their source), so how many there are is known only at its end.
    """
    return (
        f"stored outputs of job '{job_name}' were computed by an older memodag, which computed "
        f"versions another way (this memodag uses version scheme {VERSION_SCHEME}): they are "
        "recomputed, once, when their steps next run"
    )
