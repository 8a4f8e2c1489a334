"""Kernel splat detection: the guest's log since a case began, against overlay_harness/host/splats.toml."""

import functools
import importlib.resources
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

POLICY_FILE = importlib.resources.files(__package__).joinpath("splats.toml")  # shipped in the package
KERN_ERR = 3

# /proc/sys/kernel/tainted bits (Documentation/admin-guide/tainted-kernels.rst).
TAINT_FLAGS = "PFSRMBUDAWCIOELKXTN"


@dataclass(frozen=True)
class Rule:
    name: str
    regex: re.Pattern
    reason: str = ""


@dataclass
class Policy:
    deny: list
    allow: list

    @classmethod
    def load(cls, path=POLICY_FILE):
        """The policy of a splats.toml; ValueError naming the file and the entry when one is
        bad (TOML syntax, a key missing or unknown, a pattern that does not compile)."""
        try:
            data = tomllib.loads((Path(path) if isinstance(path, str) else path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"kernel-log policy {path}: {e}") from None
        unknown = set(data) - {"deny", "allow"}
        if unknown:
            raise ValueError(f"kernel-log policy {path}: only [[deny]] and [[allow]] entries belong "
                             f"there, not {', '.join(sorted(unknown))}")
        rules = {}
        for kind, keys, example in (
                ("deny", ("name", "pattern"), "name = \"my WARN\", pattern = '^mydrv: fatal'"),
                ("allow", ("pattern", "reason"), "pattern = '^mydrv: retry', reason = \"why\"")):
            rules[kind] = []
            for i, entry in enumerate(data.get(kind, []), 1):
                where = f"kernel-log policy {path}, [[{kind}]] entry {i}"
                missing = [k for k in keys if not isinstance(entry.get(k), str) or not entry[k]]
                extra = set(entry) - set(keys)
                if missing or extra:
                    raise ValueError(f"{where}: " + "; ".join(
                        ([f"no {' and '.join(missing)} (a string)"] if missing else [])
                        + ([f"unknown keys {', '.join(sorted(extra))}"] if extra else []))
                        + f" (e.g. {example})")
                try:
                    regex = re.compile(entry["pattern"])
                except re.error as e:
                    raise ValueError(f"{where}: pattern {entry['pattern']!r} is not a Python regular "
                                     f"expression ({e})") from None
                rules[kind].append(Rule(entry.get("name", entry["pattern"]), regex, entry.get("reason", "")))
        return cls(rules["deny"], rules["allow"])

    def extended(self, other):
        """This policy with another's deny and allow rules added."""
        return Policy(self.deny + other.deny, self.allow + other.allow)

    def classify(self, level, text):
        """The name of the splat this line is, or None."""
        for rule in self.deny:
            if rule.regex.search(text):
                hit = rule.name
                break
        else:
            hit = "error-level message" if level <= KERN_ERR else None
        if hit is None:
            return None
        if any(rule.regex.search(text) for rule in self.allow):
            return None
        return hit


@functools.cache
def default_policy():
    return Policy.load()


def taint_letters(value):
    return "".join(flag for bit, flag in enumerate(TAINT_FLAGS) if value & (1 << bit))


def find_splats(records, policy, taint_before=0, taint_after=0, expected=()):
    """records: [[seq, level, usec, text]] from the agent's kmsg. Returns a list of
    (kind, line) for every splat, plus one for taint flags that appeared. `expected`:
    sequence numbers of records the case expected (library/kmsg.py), never splats."""
    found = []
    for seq, level, usec, text in records:
        kind = None if seq in expected else policy.classify(level, text)
        if kind:
            found.append((kind, f"[{usec / 1e6:12.6f}] {text}"))
    new = taint_after & ~taint_before
    if new:
        found.append(("taint", f"new taint flags {taint_letters(new)} "
                               f"(tainted {taint_before} -> {taint_after})"))
    return found


def excerpt(records, splats, context=20):
    """The splat lines and the log around the first one, for a report."""
    lines = [f"{kind}: {line}" for kind, line in splats]
    texts = [f"[{usec / 1e6:12.6f}] {text}" for _s, _l, usec, text in records]
    first = next((i for i, t in enumerate(texts) if any(t == line for _k, line in splats)), None)
    if first is not None:
        lines.append("--- kernel log around the first one ---")
        lines += texts[max(0, first - 5):first + context]
    return "\n".join(lines)


CONSOLE_STAMP = re.compile(r"^\[\s*\d+\.\d+\] ")


def console_excerpt(text, policy, lines=40):
    """The part of a console log a report should quote: from a little before the first
    splat (the "Kernel panic" headline comes before its stack trace, which alone can be
    longer than `lines`), else the last `lines` lines."""
    text = text.rstrip().splitlines()
    first = next((i for i, line in enumerate(text)
                  if policy.classify(7, CONSOLE_STAMP.sub("", line))), None)
    if first is None or first >= len(text) - lines:
        return "\n".join(text[-lines:])
    start = max(0, first - 3)
    if len(text) - start <= lines + 10:
        return "\n".join(text[start:])
    tail = text[-10:]
    skipped = len(text) - start - lines - len(tail)
    return "\n".join(text[start:start + lines] + [f"[... {skipped} lines ...]"] + tail)
