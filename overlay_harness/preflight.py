"""Is this machine ready to run the suite? Names every missing command, an unreadable
kernel image and the distribution's kernel package, each with its fix (exit 1), or
says it is ready (exit 0). The plugin runs the same check before its first boot.

    python -m overlay_harness.preflight [--kernel KERNEL]
"""

import argparse
import sys

from .host import kernel as kernel_mod
from .host import preflight


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m overlay_harness.preflight",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default=None, help="the kernel to check (default: the newest under /boot)")
    args = ap.parse_args(argv)
    found = []
    try:
        kernel = kernel_mod.resolve(args.kernel)
    except kernel_mod.KernelError as e:
        kernel = None
        package = preflight.kernel_package(preflight.os_release())
        found.append(preflight.Problem(f"{e}" + (f" (apt-get install {package})" if package else "")))
    found += preflight.problems(kernel.image if kernel else None)
    for problem in found:
        print(f"preflight: {problem}", file=sys.stderr)
    blocking = any(p.blocking for p in found)
    if not blocking:
        print(f"preflight: ready (kernel {kernel.release})")
    return 1 if blocking else 0


if __name__ == "__main__":
    sys.exit(main())
