"""Layer 1, runs INSIDE the VM: scripts started as `python3 -I -S FILE` in the guest.

Standard library only, and nothing from overlay_harness: under `-S` there is no
site-packages, and the guest reads every import over 9p. The host runs them by path:

    agent.py        the guest agent: system calls for the host, one JSON line each
    netns.py        network namespace, veth and NFS server helpers for the NFS lower
    copyup_race.py  readers racing a metacopy data copy-up (test_metacopy.py)
"""

import importlib.resources
from pathlib import Path


def script(name):
    """The path of a guest-side script, for the host to start in the guest (the package's
    own file, found with importlib.resources: the guest reads it over 9p from the host's
    root, so it must be a file on the host's filesystem, not inside a zip)."""
    path = importlib.resources.files(__name__).joinpath(name)
    if not isinstance(path, Path):
        raise FileNotFoundError(f"guest-side script {name!r} is inside {path}: the guest reads it "
                                "from the host's filesystem; install overlay-harness unzipped")
    if not path.is_file():
        raise FileNotFoundError(f"no guest-side script {name!r} in {path.parent}")
    return path.resolve()
