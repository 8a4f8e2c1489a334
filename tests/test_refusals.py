"""docs/refusals.md (python -m overlay_harness.refusals): current for every kernel whose
fs/overlayfs source is cached, every message of it classified, the case column read from
the cases' expect_kmsg() calls; the message regexes expect_kmsg matches with. No VM."""

import pytest

from overlay_harness import refusals
from overlay_harness.host import splat
from overlay_harness.library.kmsg import format_regex
from overlay_harness.refusal_triggers import SITES, TRIGGERS

C_SOURCE = r'''
static int ovl_parse_redirect_mode(struct ovl_config *config,
                   const char *mode)
{
    if (bad) {
        pr_err("bad mount option \"redirect_dir=%s\"\n",
               mode);
        return -EINVAL;
    }
    static const struct x y = {
        .a = 1,
    };
    pr_warn("first part, "
        "second part\n");
}

struct dentry *ovl_lookup_temp(struct ovl_fs *ofs)
{
    return invalfc(fc, "%s is not a directory", name);
}
'''


def test_scan_finds_sites_functions_and_whole_formats(tmp_path):
    src = tmp_path / "super.c"
    src.write_text(C_SOURCE)
    got = [(s.function, s.call, s.format) for s in refusals.scan(src)]
    assert got == [
        ("ovl_parse_redirect_mode", "pr_err", 'bad mount option "redirect_dir=%s"'),
        ("ovl_parse_redirect_mode", "pr_warn", "first part, second part"),
        ("ovl_lookup_temp", "invalfc", "%s is not a directory"),
    ]


@pytest.mark.parametrize("release", refusals.KERNELS)
def test_docs_refusals_md_is_current(release):
    directory = refusals.source_dir(release)
    if directory is None:
        pytest.skip(f"no linux-source of {release} in the cache "
                    f"(python -m overlay_harness.fetch --source ...): its table cannot be checked")
    text = refusals.DOC.read_text()
    assert refusals._section(text, release) == refusals.table(release, directory), \
        f"{refusals.DOC} is stale for {release}: regenerate it with `{refusals.REGENERATE}`"


def test_every_entry_is_a_message_of_a_cached_kernel():
    dirs = [refusals.source_dir(r) for r in refusals.KERNELS]
    if None in dirs:
        pytest.skip("not every kernel of docs/refusals.md has its source cached")
    formats = {s.format for d in dirs for s in refusals.sites(d)}
    assert sorted(set(SITES) - formats) == []
    assert all(trigger in TRIGGERS for _result, trigger, _how in SITES.values())


def test_case_column_comes_from_expect_kmsg_calls():
    formats = set(SITES)
    by = refusals.triggered_by("any", formats)
    assert by["workdir and upperdir must be separate subtrees"] == [
        "test_refusals.py::test_workdir_inside_upperdir_is_refused"]
    # through a parametrize table of the module
    assert "test_refusals.py::test_refused_option" in by["conflicting options: nfs_export=on,index=off"]


def test_alternatives_credit_only_a_single_match(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "def test_a(guest):\n"
        "    with expect_kmsg(guest, ('empty lowerdir',\n"
        "                             'unescaped trailing colons in lowerdir mount option.')):\n"
        "        pass\n")
    both = {"empty lowerdir", "unescaped trailing colons in lowerdir mount option."}
    assert refusals.triggered_by("k", both, tmp_path) == {}
    assert refusals.triggered_by("k", {"empty lowerdir"}, tmp_path) == {
        "empty lowerdir": ["test_x.py::test_a"]}


@pytest.mark.parametrize("fmt,line,hit", [
    ("failed to resolve '%s': %i", "overlayfs: failed to resolve '/x/y': -2", True),
    ("invalid origin (%*phN)", "overlayfs: invalid origin (0001fb)", True),
    ("%s is not a directory", "overlay: /x is not a directory", True),
    ("missing 'lowerdir'", "overlayfs: missing 'workdir'", False),
    ("missing 'lowerdir'", "ext4: missing 'lowerdir'", False),
    ('"xino" feature enabled using %d upper inode bits.',
     'overlayfs: "xino" feature enabled using 2 upper inode bits.', True),
])
def test_format_regex(fmt, line, hit):
    assert bool(format_regex(fmt).search(line)) is hit


def test_expected_records_are_no_splats():
    policy = splat.Policy.load()
    records = [[7, 3, 1000, "overlayfs: missing 'lowerdir'"], [8, 3, 2000, "overlayfs: missing 'workdir'"]]
    found = splat.find_splats(records, policy, expected={7})
    assert [line for _kind, line in found] == ["[    0.002000] overlayfs: missing 'workdir'"]
