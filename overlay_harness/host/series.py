"""A patch series for fs/overlayfs, as files: read, checked and applied (no pytest).

`--overlay-patch FILE` (repeatable, in order) takes a `git format-patch` file, an mbox
of a whole series as `b4 am` writes it, or a plain diff, each with kernel-tree paths
(a/fs/overlayfs/super.c). An mbox is split into its messages with the standard
library's `email` parser; the cover letter (`[PATCH 0/N]`, or any message without a
diff) is not applied, but its Message-ID names the series. Each patch is written out as
a file of its own under the run directory (its sha256 is over that file's bytes), so that
`sha256sum *.patch | cut -c-64 | sha256sum` there gives the series' patchset hash as
KCIDB defines it.

The module route builds overlay.ko only: a patch that touches a file outside
fs/overlayfs cannot be tested that way, and a patch that does not apply cannot be tested
at all. Both are a SeriesError (the plugin turns it into one usage error before any boot)
naming the patch and the first file.

Patches are applied with `git apply` semantics (-p1, context must match, no fuzz) in a
scratch tree that holds a copy of the base fs/overlayfs (the kernel under test's own
source, or --overlay-src)."""

import email
import email.policy
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

OVERLAY_DIR = "fs/overlayfs/"
# An mbox separator line: "From <sha> Mon Sep 17 00:00:00 2001" (git format-patch),
# "From git@z Thu Jan  1 00:00:00 1970" (b4 am), "From user@host Tue Dec  1 ..." (mail).
_FROM_LINE = re.compile(rb"^From \S+ +\w{3} \w{3} [ \d]?\d \d\d:\d\d:\d\d \d{4}\s*$", re.M)
_COVER = re.compile(r"\[[^\]]*?\b0+/\d+\s*\]")
_NUMBER = re.compile(r"\[[^\]]*?\b(\d+)/(\d+)\s*\]")
# Build outputs never count as source (modbuild copies without them too).
_BUILD_OUTPUTS = re.compile(r"(\.o|\.ko|\.mod(\..*)?|\.cmd|\.a)$|^(modules\.order|Module\.symvers)$")


class SeriesError(Exception):
    """The series cannot be tested by the module route (a usage error, before any boot)."""


@dataclass
class Patch:
    source: Path            # the file the user gave (a patch, or the mbox it came from)
    file: Path              # the file it is applied from (the message, written out)
    subject: str
    message_id: str | None
    sha256: str             # over `file`'s bytes
    files: list = field(default_factory=list)   # kernel-tree paths it touches, in order

    def to_json(self):
        return {"subject": self.subject, "message_id": self.message_id, "file": str(self.file),
                "sha256": self.sha256, "source": str(self.source), "files": list(self.files)}


@dataclass
class Series:
    patches: list
    message_id: str | None  # the cover letter's, else the first patch's
    cover: str | None       # the cover letter's subject, when there was one

    @property
    def patchset_hash(self):
        return patchset_hash(p.sha256 for p in self.patches)


def patchset_hash(digests):
    """KCIDB's patchset_hash: sha256 over the patches' sha256 hex digests, each followed by
    a newline, in order of application ("" for no patches)."""
    digests = list(digests)
    if not digests:
        return ""
    return hashlib.sha256("".join(f"{d}\n" for d in digests).encode()).hexdigest()


def touched_files(diff_text):
    """The kernel-tree paths a diff touches, in order (a/ and b/ prefixes dropped,
    /dev/null left out)."""
    found = []
    for line in diff_text.splitlines():
        m = re.match(r"diff --git a/(\S+) b/(\S+)", line)
        names = m.groups() if m else ()
        if not m:
            m = re.match(r"(?:---|\+\+\+) (?:[ab]/)?([^\s]+)", line)
            names = (m.group(1),) if m and m.group(1) != "/dev/null" else ()
        for name in names:
            if name not in found:
                found.append(name)
    return found


def _has_diff(text):
    return bool(re.search(r"^(diff --git |--- \S)", text, re.M)) and bool(re.search(r"^@@ ", text, re.M))


def _split_mbox(data):
    """The messages of an mbox, each with its own "From " line."""
    starts = [m.start() for m in _FROM_LINE.finditer(data)]
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)], strict=True)]


def _message_text(msg, raw):
    """What `git apply` gets for one message: the raw message when its body is plain text
    (7bit/8bit), else the message's headers and its decoded body."""
    cte = (msg.get("Content-Transfer-Encoding") or "").strip().lower()
    if msg.is_multipart() or cte in ("", "7bit", "8bit", "binary"):
        return raw
    body = msg.get_payload(decode=True) or b""
    head = raw.split(b"\n\n", 1)[0]
    return head + b"\n\n" + body


def read(paths, out_dir):
    """The series in `paths` (in order), each patch written to out_dir/NNNN-name.patch."""
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    patches, message_id, cover = [], None, None
    for given in paths:
        path = Path(given).expanduser()
        try:
            data = path.read_bytes()
        except OSError as e:
            raise SeriesError(f"--overlay-patch {given}: {e.strerror or e}") from None
        messages = _split_mbox(data) if _FROM_LINE.match(data) else []
        if not messages:   # a plain diff (maybe with a header of its own)
            text = data.decode(errors="replace")
            if not _has_diff(text):
                raise SeriesError(f"--overlay-patch {given}: no diff in it (a git format-patch file, "
                                  "an mbox of a series, or a unified diff with kernel-tree paths)")
            subject = next((ln.partition(":")[2].strip() for ln in text.splitlines()
                            if ln.lower().startswith("subject:")), path.name)
            patches.append(_write(out, len(patches) + 1, path, subject, None, data, text))
            continue
        for raw in messages:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            subject = " ".join(str(msg.get("Subject", "")).split())
            mid = str(msg.get("Message-ID", "")).strip() or None
            body = _message_text(msg, raw)
            text = body.decode(errors="replace")
            if _COVER.search(subject) or not _has_diff(text):
                if _COVER.search(subject):
                    cover = subject
                    message_id = message_id or mid
                continue
            patches.append(_write(out, len(patches) + 1, path, subject or path.name, mid, body, text))
    if not patches:
        raise SeriesError(f"--overlay-patch {', '.join(map(str, paths))}: no patch in it "
                          "(only a cover letter, or messages without a diff)")
    return Series(patches=patches, message_id=message_id or patches[0].message_id, cover=cover)


def _write(out, number, source, subject, mid, data, text):
    slug = re.sub(r"[^A-Za-z0-9]+", "-", re.sub(r"^\[[^\]]*\]\s*", "", subject)).strip("-")[:52]
    file = out / f"{number:04d}-{slug or 'patch'}.patch"
    file.write_bytes(data)
    return Patch(source=source, file=file, subject=subject, message_id=mid,
                 sha256=hashlib.sha256(data).hexdigest(), files=touched_files(text))


def _name(patch, series):
    i = series.patches.index(patch) + 1
    return f"patch {i}/{len(series.patches)} ({patch.source}: \"{patch.subject}\")"


def check_paths(series):
    """Every patch touches fs/overlayfs only, else a SeriesError naming the patch and its
    first file outside, with the full-kernel route."""
    for p in series.patches:
        if not p.files:
            raise SeriesError(f"{_name(p, series)}: names no file")
        outside = [f for f in p.files if not f.startswith(OVERLAY_DIR)]
        if outside:
            raise SeriesError(
                f"{_name(p, series)} touches {outside[0]}, outside fs/overlayfs: the module route "
                "builds overlay.ko only. Test it on a whole kernel: apply the series to a kernel "
                "tree (git am), build it (python -m overlay_harness.bisect builds and runs one "
                "step) and run pytest --kernel=TREE.")


def apply(series, base, tree):
    """A copy of `base` (a fs/overlayfs directory) at TREE/fs/overlayfs with the series
    applied, patch by patch (`git apply -p1`, no fuzz); that fs/overlayfs. A SeriesError
    names the first patch that does not apply and the file git names."""
    tree = Path(tree)
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(base, tree / "fs" / "overlayfs",
                    ignore=lambda _d, names: [n for n in names if _BUILD_OUTPUTS.search(n)])
    # No repository above the scratch tree is looked for: inside one, git apply takes
    # paths relative to its top and skips what lies outside the current directory.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.resolve().parent)}
    for p in series.patches:
        r = subprocess.run(["git", "apply", "-p1", "--whitespace=nowarn", str(p.file.resolve())],
                           cwd=tree, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            err = r.stderr.strip()
            m = re.search(r"error: (?:patch failed: )?(\S+?)(?::\d+)?(?::| )", err)
            where = m.group(1) if m else (p.files[0] if p.files else "?")
            raise SeriesError(f"{_name(p, series)} does not apply onto {base} at {where}: "
                              f"{err.splitlines()[0] if err else 'git apply failed'}")
    return tree / "fs" / "overlayfs"


def source_digest(directory):
    """sha256 over a fs/overlayfs directory's source files (names and bytes, sorted; build
    outputs left out): the same source gives the same digest wherever it lies."""
    root = Path(directory)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not _BUILD_OUTPUTS.search(p.name)):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()
