"""The kernel-log checker on recorded logs (no VM)."""

from pathlib import Path

import pytest

from overlay_harness.host import splat

POLICY = splat.Policy.load()


def rec(text, level=6, seq=1, usec=1_000_000):
    return [seq, level, usec, text]


# Lines recorded from the suite's own dm-fault cases on Debian's 6.1 kernel.
EXPECTED_FAULT_LINES = [
    rec("Buffer I/O error on device dm-0, logical block 33280", 3),
    rec("EXT4-fs warning (device dm-0): ext4_end_bio:343: I/O error 10 writing to inode 16 "
        "starting block 33280)", 4),
    rec("dm-0: writeback error on inode 786561, offset 0, sector 786624", 3),
    rec("EXT4-fs (dm-0): shut down requested (2)", 3),
    rec("XFS (dm-0): log I/O error -5", 1),
    rec("operation not supported error, dev loop0, sector 584 op 0x9:(WRITE_ZEROES) flags 0x8000800 "
        "phys_seg 0 prio class 2", 3),
    rec("overlayfs: Cannot mount volatile when upperdir has an unseen error. Sync upperdir fs to "
        "clear state.", 3),
]


def test_expected_fault_lines_are_allowed():
    assert splat.find_splats(EXPECTED_FAULT_LINES, POLICY) == []


@pytest.mark.parametrize("text, level, kind", [
    ("WARNING: CPU: 1 PID: 245 at fs/overlayfs/util.c:123 ovl_foo+0x12/0x30 [overlay]", 4, "WARNING"),
    ("BUG: kernel NULL pointer dereference, address: 0000000000000008", 1, "BUG"),
    ("kernel BUG at fs/overlayfs/copy_up.c:987!", 4, "BUG"),
    ("general protection fault, probably for non-canonical address 0xdead", 4, "Oops"),
    ("BUG: KASAN: use-after-free in ovl_lookup+0x1/0x2", 3, "BUG"),
    ("UBSAN: shift-out-of-bounds in fs/overlayfs/inode.c:12:3", 3, "UBSAN"),
    ("INFO: task python3:312 blocked for more than 120 seconds.", 3, "hung task"),
    ("WARNING: possible circular locking dependency detected", 4, "WARNING"),
    ("rcu: INFO: rcu_preempt self-detected stall on CPU", 3, "RCU stall"),
    ("Kernel panic - not syncing: sysrq triggered crash", 0, "panic"),
    # an error-level line nobody allowed: a fault on a device the cases do not fail
    ("Buffer I/O error on device vda1, logical block 7", 3, "error-level message"),
    ("EXT4-fs error (device loop3): ext4_find_entry:1600: inode #2: comm ls: reading directory", 3,
     "error-level message"),
])
def test_splats_are_caught(text, level, kind):
    found = splat.find_splats(EXPECTED_FAULT_LINES + [rec(text, level, seq=99)], POLICY)
    assert [k for k, _ in found] == [kind]
    assert text in found[0][1]


def test_a_deny_pattern_wins_over_the_level_but_not_over_an_allow():
    assert POLICY.classify(6, "WARNING: CPU: 0 PID: 1 at x") == "WARNING"
    assert POLICY.classify(6, "ordinary info line") is None
    assert POLICY.classify(3, "Buffer I/O error on device dm-3, logical block 1") is None


def test_new_taint_flags_are_a_splat():
    found = splat.find_splats([], POLICY, taint_before=0, taint_after=1 << 9)  # W
    assert found == [("taint", "new taint flags W (tainted 0 -> 512)")]
    assert splat.find_splats([], POLICY, taint_before=1 << 12, taint_after=1 << 12) == []


def test_excerpt_shows_the_splat_and_its_context():
    records = [rec(f"line {i}", seq=i) for i in range(10)]
    records.insert(6, rec("WARNING: CPU: 0 PID: 9 at mm/filemap.c:1 x", 4, seq=50))
    text = splat.excerpt(records, splat.find_splats(records, POLICY))
    assert text.splitlines()[0].startswith("WARNING: [")
    assert "line 5" in text and "line 9" in text


def test_allow_entries_need_a_reason(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("[[allow]]\npattern = 'x'\n")
    with pytest.raises(ValueError, match="no reason"):
        splat.Policy.load(bad)


def test_every_allow_entry_of_the_shipped_policy_has_a_reason():
    assert POLICY.allow and all(rule.reason for rule in POLICY.allow)


def test_console_excerpt_starts_at_the_panic_headline():
    # Recorded from a sysrq-c crash on Debian's 6.1 under TCG: the stack trace after
    # "Kernel panic" is longer than 40 lines, so a plain tail loses the headline.
    text = (Path(__file__).parent / "data/sysrq-crash-console.log").read_text()
    assert "Kernel panic - not syncing" not in "\n".join(text.splitlines()[-40:])
    excerpt = splat.console_excerpt(text, POLICY, lines=40)
    lines = excerpt.splitlines()
    assert "sysrq: Trigger a crash" in lines[2]
    assert "Kernel panic - not syncing: sysrq triggered crash" in lines[3]
    assert lines[-1].endswith(text.rstrip().splitlines()[-1])  # the end is kept
    assert len(lines) <= 40 + 1 + 10


def test_console_excerpt_without_a_splat_is_the_tail():
    text = "\n".join(f"[    1.{i:06d}] line {i}" for i in range(100))
    assert splat.console_excerpt(text, POLICY, lines=40).splitlines() == text.splitlines()[-40:]
