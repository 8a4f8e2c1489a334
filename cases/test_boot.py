"""First cases: the guest runs the chosen kernel, and a plain overlay works on it."""

import errno
import os


def test_guest_runs_chosen_kernel(guest, kernel):
    """The VM booted the kernel named by --kernel (or the default one)."""
    assert guest.uname()[2] == kernel.release


def test_overlay_on_tmpfs_write_syncfs(guest):
    """Overlay on tmpfs layers: write through the merged tree, syncfs returns 0, unmount."""
    top = guest.scratch
    for d in ("lower", "upper", "work", "merged"):
        guest.must.mkdir(f"{top}/{d}")
    fd = guest.must.open(f"{top}/lower/hello", os.O_CREAT | os.O_WRONLY, 0o644)
    guest.must.write(fd, b"from the lower layer\n")
    guest.must.close(fd)

    opts = f"lowerdir={top}/lower,upperdir={top}/upper,workdir={top}/work"
    assert guest.mount("overlay", f"{top}/merged", "overlay", 0, opts) == 0

    fd = guest.must.open(f"{top}/merged/hello", os.O_WRONLY | os.O_APPEND)
    assert guest.write(fd, b"through the overlay\n") == 20
    assert guest.syncfs(fd) == 0
    assert guest.close(fd) == 0

    # The write copied the file up; the lower file is untouched.
    assert guest.read_file(f"{top}/upper/hello") == b"from the lower layer\nthrough the overlay\n"
    assert guest.read_file(f"{top}/lower/hello") == b"from the lower layer\n"

    assert guest.umount2(f"{top}/merged") == 0
    assert guest.umount2(f"{top}/merged") == errno.EINVAL  # nothing is mounted there any more
