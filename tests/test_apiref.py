"""docs/api.md is what `python -m overlay_harness.apiref` generates from the code now (no VM):
a changed signature or docstring without the regenerated file fails here."""

from pathlib import Path

from overlay_harness import apiref
from overlay_harness.library import overlay

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_reference_is_up_to_date():
    committed = (ROOT / apiref.DOC_PATH).read_text()
    assert committed == apiref.render(), (
        "docs/api.md is out of date: run `python -m overlay_harness.apiref --write` and commit it")


def test_everything_it_lists_is_documented():
    assert "(undocumented)" not in apiref.render()


def test_it_follows_the_code(monkeypatch):
    monkeypatch.setattr(overlay.Overlay.umount, "__doc__", "Something else entirely.")
    assert "- `.umount()`: Something else entirely." in apiref.render()


def test_it_names_what_a_case_uses():
    text = apiref.render()
    for needle in ("### `guest` (function)", "### `make_overlay` (function)",
                   "`guest.pwrite(fd, data, offset)`", "`guest.syncfs(fd)`",
                   "share one upper directory and one work directory", "own `name=`",
                   "- `.failing(mode='targeted', paths=(), **kwargs)`", "- `.path(rel='')`",
                   "| `known_issue(reason, since=None, fixed=None, commit=None, upper_fs=None)` |",
                   "`overlay_harness_kernel` (`--kernel`)", "### `read_tree(guest, root)`",
                   "### `create_file(guest, path, data, mode=420)`",
                   "### `require_version(guest, since, feature)`", "`guest.scandir(path)`",
                   "`guest.link(src, dst, follow=True)`", "- `.mount_again(upper_fs_too=False, **options)`"):
        assert needle in text, needle
