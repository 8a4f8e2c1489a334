"""Layer 3, the case library: what a case works with, all of it in the guest.

    guest.py     Guest: each agent call a method returning a value or an Errno; must,
                 run, defer (cleanup registered where a resource is made), the call log
    devices.py   scratch devices with dm fault windows, filesystems, LowerFs
    overlay.py   Overlay (raw mount(2)), make_tree
    nfs.py       NfsLower: an NFS export from a network namespace of the guest
    features.py  guest preparation after each boot, kernel features, require()
    kmsg.py      expect_kmsg: the kernel messages a case expects (the log check allows them)
    repro.py     the call log as a script that replays it in a guest
"""
