"""What follows each message overlayfs logs, and what makes userspace reach it: the data
behind docs/refusals.md (python -m overlay_harness.refusals), keyed by the message's format
string as the kernel's source has it (escapes decoded, trailing newline dropped), so that
it does not depend on line numbers and one entry serves every kernel that words a
message the same way. Which case triggers a site is not kept here: the generator reads it
from the cases' expect_kmsg() calls.

Each value: (what follows, trigger, how). Triggers:
  options            mount options alone (mount(2) data, fsconfig)
  layers             the directories or filesystems given as layers
  module parameter   a parameter of the overlay module (/sys/module/overlay/parameters)
  operation          a sequence of mounts and calls on the layers (no hand-made xattrs)
  crafted            a layer made by hand (setfattr/mknod on the raw layer, a broken index)
  no                 not reachable from userspace alone: I/O or memory errors, races,
                     internal consistency checks, other architectures
"""

TRIGGERABLE = ("options", "layers", "module parameter", "operation")
TRIGGERS = TRIGGERABLE + ("crafted", "no")

EINVAL = "mount fails: EINVAL"

SITES = {
    # -- mount options --------------------------------------------------------------------------
    'unrecognized mount option "%s" or missing value': (EINVAL, "options", "an unknown option"),
    'bad mount option "redirect_dir=%s"': (EINVAL, "options", "redirect_dir=bogus"),
    "conflicting options: metacopy=on,redirect_dir=%s": (
        EINVAL,
        "options",
        "metacopy=on with an explicit redirect_dir=off/nofollow (follow with upperdir)",
    ),
    "conflicting options: nfs_export=on,index=off": (
        EINVAL,
        "options",
        "nfs_export=on,index=off with upperdir",
    ),
    "conflicting options: nfs_export=on,metacopy=on": (EINVAL, "options", "nfs_export=on,metacopy=on"),
    "conflicting options: userxattr,redirect_dir=%s": (EINVAL, "options", "userxattr,redirect_dir=on"),
    "conflicting options: userxattr,metacopy=on": (EINVAL, "options", "userxattr,metacopy=on"),
    "disabling metacopy due to redirect_dir=%s": (
        "metacopy off",
        "module parameter",
        "metacopy on by default, redirect_dir=off given",
    ),
    "disabling metacopy due to nfs_export=on": (
        "metacopy off",
        "module parameter",
        "metacopy on by default, nfs_export=on given",
    ),
    "disabling nfs_export due to index=off": (
        "nfs_export off",
        "module parameter",
        "nfs_export on by default, index=off given",
    ),
    "disabling nfs_export due to metacopy=on": (
        "nfs_export off",
        "module parameter",
        "nfs_export on by default, metacopy=on given",
    ),
    "disabling nfs_export due to verity=%s": (
        "nfs_export off",
        "module parameter",
        "nfs_export on by default, verity=on given",
    ),
    'NFS export requires "redirect_dir=nofollow" on non-upper mount, falling back to nfs_export=off.': (
        "nfs_export off",
        "options",
        "nfs_export=on,redirect_dir=follow without upperdir",
    ),
    'option "workdir=%s" is useless in a non-upper mount, ignore': (
        "option ignored (read-only mount)",
        "options",
        "workdir= without upperdir",
    ),
    'option "index=on" is useless in a non-upper mount, ignore': (
        "option ignored",
        "options",
        "index=on without upperdir",
    ),
    'option "volatile" is meaningless in a non-upper mount, ignoring it.': (
        "option ignored",
        "options",
        "volatile without upperdir",
    ),
    'option "uuid=on" requires an upper fs, falling back to uuid=null.': (
        "uuid=null",
        "options",
        "uuid=on without upperdir",
    ),
    "missing 'lowerdir'": (EINVAL, "options", "no lowerdir="),
    "missing 'workdir'": (EINVAL, "options", "upperdir= without workdir="),
    "at least 2 lowerdir are needed while upperdir nonexistent": (
        EINVAL,
        "options",
        "one lowerdir, no upperdir",
    ),
    "at least one non-data lowerdir is required": (EINVAL, "options", "only data layers (lowerdir=::d)"),
    "too many lower directories, limit is %d": (EINVAL, "options", "501 lower layers"),
    "empty lowerdir": (EINVAL, "options", "an empty name in lowerdir (a trailing or doubled colon)"),
    "unescaped trailing colons in lowerdir mount option.": (EINVAL, "options", "lowerdir=a:"),
    "only single ':' or double '::' sequences of unescaped colons in lowerdir mount option allowed.": (
        EINVAL,
        "options",
        "lowerdir=a:::b",
    ),
    "regular lower layers cannot follow data lower layers": (EINVAL, "options", "lowerdir=a::d:b"),
    "regular lower layers cannot follow data layers": (
        EINVAL,
        "options",
        "lowerdir+=a,datadir+=d,lowerdir+=b",
    ),
    "lowerdir+ and datadir+ cannot follow lowerdir": (EINVAL, "options", "lowerdir=a,lowerdir+=b"),
    "No changes allowed in reconfigure": (
        "reconfigure fails: EINVAL (fs_context log only)",
        "options",
        "fspick()+fsconfig() of any option on a mounted overlay (mount(2) remount ignores them)",
    ),
    '"xino=on" is useless with all layers on same fs, ignore.': (
        "option ignored: real inode numbers",
        "options",
        "xino=on with every layer on one fs",
    ),
    '"xino" feature enabled using %d upper inode bits.': (
        "notice: xino on",
        "layers",
        "layers on several filesystems with xino=on/auto",
    ),
    "The uuid=off requires a single fs for lower and upper, falling back to uuid=on.": (
        "uuid=on",
        "layers",
        "uuid=off with lower and upper on different filesystems",
    ),
    "xino not supported on 32bit kernel, falling back to xino=off.": ("xino off", "no", "a 32-bit kernel"),
    "redirect_dir requires permission to access trusted xattrs": (
        EINVAL,
        "options",
        "redirect_dir=on in a user namespace mount",
    ),
    "metacopy requires permission to access trusted xattrs": (
        EINVAL,
        "options",
        "metacopy=on in a user namespace mount",
    ),
    "verity requires permission to access trusted xattrs": (
        EINVAL,
        "options",
        "verity=on in a user namespace mount",
    ),
    "lower data-only dirs require permission to access trusted xattrs": (
        EINVAL,
        "options",
        "data-only layers in a user namespace mount",
    ),
    '"check_copy_up" module option is obsolete': (
        "parameter ignored (stays N)",
        "module parameter",
        "writing check_copy_up",
    ),
    # -- layers ---------------------------------------------------------------------------------
    "failed to resolve '%s': %i": (
        "mount fails: the lookup's errno (ENOENT)",
        "layers",
        "a missing lowerdir",
    ),
    "'%s' not a directory": (EINVAL, "layers", "a regular file as lowerdir"),
    "%s is not a directory": (EINVAL, "layers", "a regular file as lowerdir"),
    "filesystem on '%s' not supported": (
        EINVAL,
        "layers",
        "a layer with d_hash/d_compare/automount dentries (vfat, autofs)",
    ),
    "filesystem on %s not supported": (
        EINVAL,
        "layers",
        "a layer with d_hash/d_compare/automount dentries (vfat, autofs)",
    ),
    "filesystem on '%s' not supported as upperdir": (EINVAL, "layers", "an overlay as upperdir"),
    "filesystem on %s not supported as upperdir": (EINVAL, "layers", "an overlay as upperdir"),
    "filesystem on %s is read-only": (EINVAL, "layers", "a read-only mount as upperdir"),
    "upper fs is r/o, try multi-lower layers mount": (EINVAL, "layers", "a read-only mount as upperdir"),
    "case-%ssensitive directory on %s is inconsistent": (
        EINVAL,
        "layers",
        "casefolded and plain directories as layers (ext4 -O casefold, chattr +F)",
    ),
    "strict encoding not supported": (EINVAL, "layers", "a casefold layer with strict encoding"),
    "all layers must have the same encoding": (EINVAL, "layers", "casefold layers of different encodings"),
    "workdir and upperdir must reside under the same mount": (
        EINVAL,
        "layers",
        "workdir on another mount (a bind mount) than upperdir",
    ),
    "workdir and upperdir must be separate subtrees": (EINVAL, "layers", "workdir inside upperdir"),
    "conflicting %s path": ("mount fails: ELOOP", "layers", "the same directory twice in lowerdir"),
    "overlapping %s path": ("mount fails: ELOOP", "layers", "a lowerdir inside upperdir"),
    "maximum fs stacking depth exceeded": (EINVAL, "layers", "an overlay over an overlay over an overlay"),
    "fs on '%s' does not support file handles, falling back to index=off,nfs_export=off.": (
        "index and nfs_export off",
        "layers",
        "index=on over a lower without file handles (ramfs)",
    ),
    "fs on '%s' does not support file handles, falling back to xino=off.": (
        "xino off",
        "layers",
        "xino=auto over a lower without file handles (ramfs)",
    ),
    "%s uuid detected in lower fs '%pd2', falling back to xino=%s,index=off,nfs_export=off.": (
        "xino, index and nfs_export off",
        "layers",
        "index=on over a lower fs with a null or duplicate uuid",
    ),
    "%s uuid in non-single lower fs '%pd2', falling back to xino=%s,index=off,nfs_export=off.": (
        "xino, index and nfs_export off",
        "layers",
        "index=on over several lower filesystems, one with a null or duplicate uuid",
    ),
    "upper fs needs to support d_type.": ("warning only", "layers", "an upper without d_type (xfs ftype=0)"),
    "upper fs does not support tmpfile.": ("warning only", "layers", "an upper without O_TMPFILE"),
    "upper fs does not support RENAME_WHITEOUT.": ("warning only", "layers", "a ramfs upper"),
    "failed to set xattr on upper": ("xattr features off", "layers", "a ramfs upper"),
    "...falling back to index=off,metacopy=off.": (
        "index, metacopy off",
        "layers",
        "index=on on a ramfs upper",
    ),
    "...falling back to index=off.": ("index off", "layers", "index=on on a ramfs upper"),
    "...falling back to metacopy=off.": ("metacopy off", "layers", "metacopy=on on a ramfs upper"),
    "...falling back to redirect_dir=nofollow.": (
        "redirect_dir=nofollow",
        "layers",
        "redirect_dir=on on a ramfs upper",
    ),
    "...falling back to uuid=null.": ("uuid=null", "layers", "uuid=on on a ramfs upper"),
    "...falling back to xino=off.": ("xino off", "layers", "xino=auto on a ramfs upper"),
    "try mounting with 'userxattr' option": (
        "notice",
        "layers",
        "a user namespace mount without userxattr (trusted.* gives EPERM)",
    ),
    "upper fs missing required features.": (
        EINVAL,
        "layers",
        "a remote upper (NFS) without xattrs/whiteouts",
    ),
    "upper fs does not support file handles, falling back to index=off.": (
        "index off",
        "layers",
        "index=on on an upper with xattrs but no file handles",
    ),
    'NFS export requires "index=on", falling back to nfs_export=off.': (
        "nfs_export off",
        "layers",
        "nfs_export=on on a ramfs upper",
    ),
    "NFS export requires an index dir, falling back to nfs_export=off.": (
        "nfs_export off",
        "operation",
        "nfs_export=on with a workdir that cannot be made (read-only mount)",
    ),
    "NFS export is not supported with metadata only copy up, falling back to nfs_export=off.": (
        "nfs_export off",
        "no",
        "the option resolution before it already settles metacopy against nfs_export",
    ),
    # -- work and index dirs ---------------------------------------------------------------------
    "failed to create directory %s/%s (errno: %i); mounting read-only": (
        "read-only mount",
        "operation",
        "a workdir where work/ cannot be made (chattr +i)",
    ),
    "%s is in-use as upperdir/workdir of another mount, mount with '-o index=off' to override "
        "exclusive upperdir protection.": (
        "mount fails: EBUSY",
        "operation",
        "index=on with the upperdir/workdir of a mounted overlay",
    ),
    "%s is in-use as upperdir/workdir of another mount, accessing files from both mounts will "
        "result in undefined behavior.": (
        "warning only",
        "operation",
        "index=off with the upperdir/workdir of a mounted overlay",
    ),
    "overlay with incompat feature '%s' cannot be mounted": (
        EINVAL,
        "operation",
        "mounting again after a volatile mount",
    ),
    "Cannot mount volatile when upperdir has an unseen error. Sync upperdir fs to clear state.": (
        "mount fails: EIO",
        "operation",
        "a volatile mount over an upper with an unseen writeback error",
    ),
    "failed to verify upper root origin": (
        "mount fails: ESTALE",
        "operation",
        "index=on over another lower than the first mount's",
    ),
    "failed to verify %s (%pd2, ino=%lu, err=%i)": (
        "mount fails: ESTALE",
        "operation",
        "index=on over another lower, or another upper with the same workdir",
    ),
    "failed to verify %s (%pd2, ino=%llu, err=%i)": (
        "mount fails: ESTALE",
        "operation",
        "index=on over another lower, or another upper with the same workdir",
    ),
    "failed to verify index dir 'upper' xattr": (
        "mount fails: ESTALE",
        "operation",
        "index=on with another upperdir over the same workdir",
    ),
    "failed to verify index dir 'origin' xattr": (
        "mount fails: ESTALE",
        "crafted",
        "an index dir with an old-style origin xattr of another upper",
    ),
    "try deleting index dir or mounting with '-o index=off' to disable inodes index.": (
        "with the index dir's failure",
        "operation",
        "index=on with another upperdir over the same workdir",
    ),
    "failed index dir cleanup (%i)": ("mount fails", "crafted", "an index entry that cannot be verified"),
    "Failed to create volatile/dirty file.": ("mount fails", "no", "an I/O or space error on the upper"),
    "workdir/%s already exists": ("mount fails: EEXIST", "no", "a race on the work dir's temp names"),
    "failed to lock workdir+upperdir": (
        "the operation fails: EIO",
        "crafted",
        "upper and work renamed into each other",
    ),
    # -- lookups over crafted layers -------------------------------------------------------------
    "failed to get origin (%i)": ("lookup fails", "no", "getxattr errors of the upper"),
    "invalid origin (%*phN)": ("origin ignored", "crafted", "a bad trusted.overlay.origin on an upper file"),
    "invalid origin (%pd2, ftype=%x, origin ftype=%x).": (
        "lookup fails: ESTALE",
        "crafted",
        "an origin xattr naming a lower inode of another type",
    ),
    "invalid index upper (%pd2, upper=%pd2).": (
        "index entry rejected",
        "crafted",
        "an index entry of another upper",
    ),
    "failed to verify index (%pd2, ftype=%x, err=%i)": (
        "mount fails or entry removed",
        "crafted",
        "a bad index entry name",
    ),
    "orphan index entry (%pd2, ftype=%x, nlink=%u)": (
        "entry removed",
        "crafted",
        "an index entry whose upper is gone",
    ),
    "failed inode index lookup (ino=%lu, key=%.*s, err=%i);\noverlayfs: mount with '-o index=off' "
        "to disable inodes index.": (
        "lookup fails",
        "crafted",
        "a broken index entry",
    ),
    "failed inode index lookup (ino=%llu, key=%.*s, err=%i);\noverlayfs: mount with '-o index=off' "
        "to disable inodes index.": (
        "lookup fails",
        "crafted",
        "a broken index entry",
    ),
    "bad index found (index=%pd2, ftype=%x, origin ftype=%x).": (
        "lookup fails: EIO",
        "crafted",
        "an index entry of another type",
    ),
    "suspected uncovered redirected dir found (origin=%pd2, index=%pd2).": (
        "lookup fails: ESTALE",
        "crafted",
        "a directory index entry without its upper",
    ),
    "suspected multiply redirected dir found (upper=%pd2, origin=%pd2, index=%pd2).": (
        "lookup fails: ESTALE",
        "crafted",
        "two upper dirs redirected to one origin",
    ),
    "refusing to follow metacopy origin for (%pd2)": (
        "lookup fails: EPERM",
        "operation",
        "a metacopy file mounted again with metacopy=off",
    ),
    "refusing to follow redirect for (%pd2)": (
        "lookup fails: EPERM",
        "crafted",
        "a redirect xattr on an upper dir, mounted with redirect_dir=nofollow",
    ),
    "metacopy with no lower data found - abort lookup (%pd2)": (
        "lookup fails: EIO",
        "operation",
        "a metacopy file whose lower file was removed while unmounted",
    ),
    "lazy lowerdata lookup failed (%pd2, err=%i)": (
        "open fails",
        "crafted",
        "a metacopy redirect into a data layer that lacks it",
    ),
    "metacopy file '%pd' has no digest specified": (
        "open fails: EIO",
        "crafted",
        "verity=require with a metacopy xattr without digest",
    ),
    "metacopy file '%pd' has too small xattr": (
        "lookup fails: EIO",
        "crafted",
        "a short trusted.overlay.metacopy",
    ),
    "metacopy file '%pd' has unsupported version": (
        "lookup fails: EIO",
        "crafted",
        "a metacopy xattr of another version",
    ),
    "metacopy file '%pd' has invalid xattr size": (
        "lookup fails: EIO",
        "crafted",
        "a metacopy xattr of a wrong length",
    ),
    "failed to get metacopy (%i)": ("lookup fails", "no", "getxattr errors of the upper"),
    "invalid redirect (%s)": (
        "lookup fails: EINVAL",
        "crafted",
        "a relative trusted.overlay.redirect with a '/'",
    ),
    "failed to get redirect (%i)": ("lookup fails", "no", "getxattr errors of the upper"),
    "incompatible overlay.protattr format (%pd2, len=%d)": (
        "attribute ignored",
        "crafted",
        "a trusted.overlay.protattr with unknown letters",
    ),
    "lower file '%pd' failed to load fs-verity info": ("open fails", "no", "fs-verity errors of the lower"),
    "lower file '%pd' has no fs-verity digest": (
        "open fails: EIO",
        "crafted",
        "verity=require over a lower file without fs-verity",
    ),
    "lower file '%pd' has the wrong fs-verity digest": (
        "open fails: EIO",
        "crafted",
        "a metacopy digest of another file",
    ),
    "wrong inherited casefold (%pd2)": (
        "lookup fails: EIO",
        "crafted",
        "a casefold flag changed on an upper dir",
    ),
    "failed lookup in %s (%pd2, name='%.*s', err=%i): %s": (
        "lookup fails",
        "crafted",
        "a layer whose lookup errors",
    ),
    "lookup '%s/%.*s' failed (%i)": ("readdir cleanup fails", "no", "lookup errors in a work dir cleanup"),
    "failed to look up (%s) for ino (%i)": (
        "readdir fails",
        "no",
        "lookup errors while reading a merged dir",
    ),
    "d_ino too big (%.*s, ino=%llu, xinobits=%d)": (
        "d_ino not mapped",
        "layers",
        "xino=on over a lower with inode numbers in the xino bits",
    ),
    "inode number too big (%pd2, ino=%llu, xinobits=%d)": (
        "st_ino not mapped",
        "layers",
        "xino=on over a lower with inode numbers in the xino bits",
    ),
    # -- failures of the underlying filesystems ---------------------------------------------------
    "failed to retrieve lower fileattr (%pd2, err=%i)": (
        "copy-up fails",
        "no",
        "fileattr errors of the lower",
    ),
    "copying fileattr: no xattr on upper": ("copy-up fails", "no", "an upper losing xattrs after the mount"),
    "copying fileattr: no support on upper": (
        "flags not copied",
        "layers",
        "a lower with chattr flags, an upper without fileattr",
    ),
    "failed to retrieve upper fileattr (%pd2, err=%i)": (
        "copy-up fails",
        "no",
        "fileattr errors of the upper",
    ),
    "cleanup of '%pd2' failed (%i)": ("warning only", "no", "unlink errors of the upper"),
    "Failed to link whiteout - disabling whiteout inode sharing(nlink=%u, err=%i)": (
        "whiteout sharing off",
        "operation",
        "more whiteouts than the upper's link limit",
    ),
    "Failed to link whiteout - disabling whiteout inode sharing(nlink=%u, err=%u)": (
        "whiteout sharing off",
        "operation",
        "more whiteouts than the upper's link limit",
    ),
    "failed lookup after mkdir (%pd2, err=%i).": ("mkdir fails", "no", "a lookup error right after mkdir"),
    "newly created inode found in cache (%pd2)": ("create fails: EIO", "no", "an internal inconsistency"),
    "failed to set redirect (%i)": ("rename fails", "no", "setxattr errors of the upper"),
    "cannot set %s xattr on upper": ("feature off", "no", "an upper losing xattrs after the mount"),
    "failed to %s uuid (%pd2, err=%i); falling back to uuid=null.": (
        "uuid=null",
        "no",
        "xattr errors on the upper root",
    ),
    "cleanup linked index (%pd2, ino=%lu, nlink=%u)": (
        "index entry removed",
        "crafted",
        "an index entry with extra links",
    ),
    "cleanup linked index (%pd2, ino=%llu, nlink=%u)": (
        "index entry removed",
        "crafted",
        "an index entry with extra links",
    ),
    "cleanup index of '%pd2' failed (%i)": ("warning only", "no", "unlink errors in the index dir"),
    "failed to get index nlink (%pd2, err=%i)": (
        "nlink from the upper",
        "crafted",
        "a bad trusted.overlay.nlink",
    ),
    "failed to get inode (%i)": ("lookup fails", "no", "memory errors"),
    # -- NFS export -------------------------------------------------------------------------------
    "failed to copy up on encode (%pd2, err=%i)": (
        "encode fails",
        "no",
        "copy-up errors while encoding a handle",
    ),
    "failed to encode file handle (%pd2, err=%i)": ("encode fails", "no", "an encode error of a layer"),
    "failed to encode file handle (ino=%llu, err=%i)": ("encode fails", "no", "an encode error of a layer"),
    "failed to lookup one by real (%pd2, layer=%d, connected=%pd2, err=%i)": (
        "decode fails",
        "crafted",
        "a handle whose path changed",
    ),
    "failed to lookup by real (%pd2, layer=%d, connected=%pd2, err=%i)": (
        "decode fails",
        "crafted",
        "a handle whose path changed",
    ),
    "failed to decode file handle (len=%d, type=%d, flags=%x, err=%i)": (
        "open_by_handle_at fails",
        "crafted",
        "open_by_handle_at() with a bad overlay handle",
    ),
    "connectable file handles not supported; use 'no_subtree_check' exportfs option.": (
        "decode fails",
        "crafted",
        "knfsd with subtree_check",
    ),
    # -- setup ------------------------------------------------------------------------------------
    "statfs failed on '%s'": ("mount fails", "no", "statfs errors of a layer"),
    "failed to clone upperpath": ("mount fails", "no", "memory errors"),
    "failed to clone lowerpath": ("mount fails", "no", "memory errors"),
    "failed to get anonymous bdev for lowerpath": ("mount fails", "no", "running out of anonymous devices"),
    "failed to get anonymous bdev for upper fs": ("mount fails", "no", "running out of anonymous devices"),
    "cannot append lower layer": ("mount fails: ENOMEM", "no", "memory errors"),
}

# Where one kernel's code makes a message of the same wording unreachable or differently
# reached: (kernel, format) -> (what follows, trigger, how), instead of SITES' entry. A case
# is never credited with these sites (a shared wording does not tell which site it reached).
PER_KERNEL = {
    ("7.3-amd64", 'unrecognized mount option "%s" or missing value'): (
        EINVAL, "no", "since the v6.5 fs_context parser the VFS answers an unknown key itself "
        "(\"Unknown parameter\"); this default branch takes only options the switch forgot"),
    ("7.3-amd64", "upper fs is r/o, try multi-lower layers mount"): (
        EINVAL, "no", "the option parser refuses a read-only upperdir first (\"filesystem on %s is "
        "read-only\"); this one needs the mount made read-only in between"),
    ("7.3-amd64", "empty lowerdir"): (
        EINVAL, "options", "an empty layer name past the v6.5 lowerdir parser, which refuses "
        "stray colons itself"),
}
