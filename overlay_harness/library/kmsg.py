"""Kernel messages a case expects: `expect_kmsg` asserts that the kernel logged them and
lets exactly those records through the kernel-log check (host/splats.toml), so any other
error-level line still fails the case."""

import contextlib
import re

# The printk conversions overlayfs uses: %s %d %i %u %x %lu %llu %.*s %*phN %pd2 %pd %pV %%
_CONVERSION = re.compile(r"%(?:%|[-+ #0]*(?:\d+|\*)?(?:\.(?:\d+|\*))?"
                         r"(?:p[a-zA-Z]+\d*|(?:hh|h|ll|l|z|t)?[diouxXcsp]))")
# pr_* sites print "overlayfs: " (pr_fmt); errorfc/invalfc/warnfc through mount(2) print the
# fs type's name, "overlay: "; the VFS's own parameter errors (fs_parser) come the same way.
PREFIXES = ("overlayfs: ", "overlay: ")


def format_regex(fmt):
    """A regex for the lines a printk format prints (after the prefix, no trailing newline):
    its text literally, each conversion as any text."""
    fmt = fmt.rstrip("\n")
    out, pos = [], 0
    for m in _CONVERSION.finditer(fmt):
        out.append(re.escape(fmt[pos:m.start()]))
        out.append("%" if m.group() == "%%" else ".*?")
        pos = m.end()
    out.append(re.escape(fmt[pos:]))
    prefixes = "|".join(re.escape(p) for p in PREFIXES)
    return re.compile(f"^(?:{prefixes})" + "".join(out) + r"\s*$", re.DOTALL)


class MessagesNotLogged(AssertionError):
    """An expected kernel message did not appear."""


@contextlib.contextmanager
def expect_kmsg(guest, *messages):
    """with expect_kmsg(guest, FORMAT, ...): the block must make the kernel log each message,
    given as the format string in the kernel's source (without the "overlayfs: " prefix and
    the trailing newline, e.g. "workdir and upperdir must be separate subtrees"), or as a
    tuple of alternatives (the same site worded differently by another kernel). The records
    that matched are allowed by the case's kernel-log check; nothing else is."""
    wanted = [(m,) if isinstance(m, str) else tuple(m) for m in messages]
    start = guest.must.kmsg_seq()
    yield
    records = guest.must.kmsg(start)
    missing = []
    for alternatives in wanted:
        regexes = [format_regex(a) for a in alternatives]
        hits = {seq for seq, _level, _usec, text in records if any(r.search(text) for r in regexes)}
        if not hits:
            missing.append(" or ".join(repr(a) for a in alternatives))
        guest.expected_kmsg.update(hits)
    if missing:
        got = "\n".join(f"  {text}" for _s, _l, _u, text in records) or "  (nothing)"
        raise MessagesNotLogged(f"the kernel did not log {', '.join(missing)}; it logged:\n{got}")
