"""Patch series for the series tests, made with git as a developer makes them: a scratch
kernel-tree repository holding a copy of fs/overlayfs, one commit per edit, then
`git format-patch --cover-letter --thread` (kernel-tree paths, a/fs/overlayfs/...), and
the same series as one mbox the way `b4 am` writes it ("From git@z ..." separators)."""

import os
import shutil
import subprocess
from pathlib import Path

ENV = {**os.environ, "GIT_AUTHOR_NAME": "A Developer", "GIT_AUTHOR_EMAIL": "dev@example.org",
       "GIT_COMMITTER_NAME": "A Developer", "GIT_COMMITTER_EMAIL": "dev@example.org",
       "GIT_AUTHOR_DATE": "2026-12-01T10:00:00Z", "GIT_COMMITTER_DATE": "2026-12-01T10:00:00Z"}

# mutants/011's hunk: ovl_sync_fs() returns 0 when the volatile mount saw an upper error
SYNCFS_GOOD = """	if (ret < 0) {
		errseq_set(&sb->s_wb_err, -EIO);
		return -EIO;
	}

	if (!ret)
		return ret;
"""
SYNCFS_BROKEN = """	if (ret <= 0)
		return 0;
"""


def _replace(tree, path, old, new, what):
    f = tree / "fs/overlayfs" / path
    text = f.read_text()
    assert old in text, f"{what} is not in this {path}"
    f.write_text(text.replace(old, new, 1))


def harmless(tree):
    _replace(tree, "super.c", "\n", "\n/* ovl: a comment only: nothing changes */\n", "a line")
    return "ovl: add a comment to super.c"


def break_syncfs(tree):
    _replace(tree, "super.c", SYNCFS_GOOD, SYNCFS_BROKEN, "the syncfs hunk of mutants/011")
    return "ovl: return 0 from syncfs of a volatile overlay that saw an error"


def fix_syncfs(tree):
    _replace(tree, "super.c", SYNCFS_BROKEN, SYNCFS_GOOD, "patch 2's hunk")
    return "ovl: return the volatile overlay's error from syncfs again"


def comment_in_file_c(tree):
    _replace(tree, "file.c", "\n", "\n/* ovl: another comment */\n", "a line")
    return "ovl: add a comment to file.c"


# mutants/001's hunk: fsync of a volatile overlay with no error reaches the upper file
FSYNC_GOOD = "\tret = ovl_sync_status(OVL_FS(file_inode(file)->i_sb));\n\tif (ret <= 0)\n"


def volatile_fsync_reaches_upper(tree):
    _replace(tree, "file.c", FSYNC_GOOD, FSYNC_GOOD.replace("ret <= 0", "ret < 0"), "mutants/001's hunk")
    return "ovl: sync the upper file on fsync of a volatile overlay"


def git(tree, *argv):
    return subprocess.run(["git", "-C", str(tree), *argv], env=ENV, check=True,
                          capture_output=True, text=True).stdout


def make_series(base, work, edits, cover_subject="ovl: a test series"):
    """(the format-patch files, the cover letter, one b4-style mbox of it all) of `edits`
    (functions editing a kernel tree, each returning its commit subject) on `base` (a
    fs/overlayfs directory)."""
    work = Path(work)
    tree, out = work / "linux", work / "patches"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base, tree / "fs" / "overlayfs",
                    ignore=shutil.ignore_patterns("*.o", "*.ko", "*.cmd", "*.mod*"))
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "base")
    for edit in edits:
        subject = edit(tree)
        git(tree, "add", "-A")
        git(tree, "commit", "-q", "-m", subject, "-m", "Signed-off-by: A Developer <dev@example.org>")
    git(tree, "format-patch", "-q", "--cover-letter", "--thread", "-o", str(out), f"HEAD~{len(edits)}")
    files = sorted(out.glob("*.patch"))
    cover, patches = files[0], files[1:]
    text = cover.read_text().replace("*** SUBJECT HERE ***", cover_subject)
    cover.write_text(text)
    mbox = work / "series.mbx"
    with open(mbox, "w") as f:
        for p in [cover, *patches]:
            first, rest = p.read_text().split("\n", 1)
            f.write("From git@z Thu Jan  1 00:00:00 1970\n" + rest)
    return patches, cover, mbox
