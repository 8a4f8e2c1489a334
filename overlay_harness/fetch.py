"""`python -m overlay_harness.fetch`: Debian's kernels into the cache (overlay_harness/host/fetch.py)."""

import sys

from .host.fetch import main

if __name__ == "__main__":
    sys.exit(main())
