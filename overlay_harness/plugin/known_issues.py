"""known_issue markers: a documented behaviour the kernel does not follow becomes a
strict xfail on the kernels in range (and the upper filesystems named)."""

import pytest

from ..host.kernel import version as kernel_version


def apply_known_issues(request, release):
    """Turn known_issue markers that apply to this kernel (and upper fs) into strict xfails."""
    version = kernel_version(release)
    params = getattr(request.node, "callspec", None)
    fs = params.params.get("upper_fs") if params else None
    for mark in request.node.iter_markers("known_issue"):
        since, fixed = mark.kwargs.get("since"), mark.kwargs.get("fixed")
        only_fs = mark.kwargs.get("upper_fs")
        if since and version < kernel_version(since):
            continue
        if fixed and version >= kernel_version(fixed):
            continue
        if only_fs and fs not in only_fs:
            continue
        # raises=AssertionError: only a wrong errno or value is the known issue; a
        # harness error or a failed set-up step still fails the case.
        request.node.add_marker(pytest.mark.xfail(
            reason=f"known kernel issue ({span(mark)}): {mark.args[0]}", strict=True,
            raises=AssertionError))


def span(mark):
    """Where a known_issue marker applies: "kernels 5.11 to before 6.13; commit 150c174a6053"."""
    since, fixed, commit = (mark.kwargs.get(k) for k in ("since", "fixed", "commit"))
    return (f"kernels {since or 'any'} to {'before ' + fixed if fixed else 'now'}"
            + (f"; commit {commit}" if commit else ""))
