#!/usr/bin/env python3
"""Readers racing data copy-up of metacopy files (runs inside the guest, stdlib only).

For every file NAME given, the overlay's MERGED/NAME must be a metadata-only
copy (metacopy=on, chowned) of LOWER/NAME. Per file, one round:

  - READERS threads loop: open(O_RDONLY) + pread of the whole file, fstat, stat;
  - one writer waits a seeded random delay, then open(O_WRONLY), which copies
    the data up, and closes;
  - the readers go on for a few more passes after the writer is done.

Every byte read must equal the lower file's bytes, and every st_blocks seen must
be either the lower file's (data still on the lower) or the upper file's once
the copy-up finished (never a partly written upper, never 0). The result is one
JSON object on stdout; the exit status is 0 whenever the run itself worked,
whatever it found.

Seed 004, patch 10: "if CPU1 perceives the effects of clearing of metacopy flag
but not effects of preceeding operations, that would be a problem."
"""

import argparse
import json
import os
import random
import sys
import threading
import time

METACOPY_XATTR = "trusted.overlay.metacopy"


def first_difference(got, want):
    if len(got) != len(want):
        return min(len(got), len(want))
    for i in range(0, len(want), 4096):
        if got[i:i + 4096] != want[i:i + 4096]:
            j = i
            while got[j] == want[j]:
                j += 1
            return j
    return -1


class Round:
    def __init__(self, merged, lower, upper, name, readers, rng, extra_passes):
        self.path = os.path.join(merged, name)
        self.upper = os.path.join(upper, name)
        self.name = name
        with open(os.path.join(lower, name), "rb") as f:
            self.want = f.read()
        self.lower_blocks = os.stat(os.path.join(lower, name)).st_blocks
        self.readers = readers
        self.delay = rng.uniform(0.0, 0.004)
        self.extra_passes = extra_passes
        self.done = threading.Event()
        self.start = threading.Barrier(readers + 1)
        self.lock = threading.Lock()
        self.blocks_seen = set()
        self.bad_data = []
        self.errors = []
        self.reads = 0
        self.stats = 0

    def note_blocks(self, blocks):
        with self.lock:
            self.blocks_seen.add(blocks)
            self.stats += 1

    def reader(self):
        self.start.wait()
        passes_after = 0
        while passes_after < self.extra_passes:
            if self.done.is_set():
                passes_after += 1
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    self.note_blocks(os.fstat(fd).st_blocks)
                    got = os.pread(fd, len(self.want) + 1, 0)
                finally:
                    os.close(fd)
                self.note_blocks(os.stat(self.path).st_blocks)
            except OSError as e:
                with self.lock:
                    self.errors.append(f"{self.name}: reader: {e}")
                continue
            with self.lock:
                self.reads += 1
            if got != self.want:
                at = first_difference(got, self.want)
                with self.lock:
                    self.bad_data.append({
                        "file": self.name, "offset": at, "got_len": len(got),
                        "zeros": at >= 0 and at < len(got) and got[at] == 0})

    def writer(self):
        self.start.wait()
        time.sleep(self.delay)
        try:
            os.close(os.open(self.path, os.O_WRONLY))
        except OSError as e:
            with self.lock:
                self.errors.append(f"{self.name}: writer open(O_WRONLY): {e}")
        finally:
            self.done.set()

    def run(self):
        threads = [threading.Thread(target=self.reader) for _ in range(self.readers)]
        threads.append(threading.Thread(target=self.writer))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final_blocks = os.stat(self.upper).st_blocks
        copied_up = METACOPY_XATTR not in os.listxattr(self.upper, follow_symlinks=False)
        allowed = {self.lower_blocks, final_blocks}
        bad_blocks = sorted(b for b in self.blocks_seen if b not in allowed or b == 0)
        return {"file": self.name, "copied_up": copied_up, "lower_blocks": self.lower_blocks,
                "upper_blocks": final_blocks, "blocks_seen": sorted(self.blocks_seen),
                "bad_blocks": bad_blocks}


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--merged", required=True)
    ap.add_argument("--lower", required=True)
    ap.add_argument("--upper", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0,
                    help="stop starting new rounds after this long")
    ap.add_argument("--extra-passes", type=int, default=3,
                    help="reads per reader after the writer finished")
    ap.add_argument("names", nargs="+")
    opts = ap.parse_args(argv)

    rng = random.Random(opts.seed)
    names = list(opts.names)
    rng.shuffle(names)
    deadline = time.monotonic() + opts.seconds
    result = {"seed": opts.seed, "order": names, "rounds": 0, "files": len(names),
              "reads": 0, "stats": 0, "bad_data": [], "bad_blocks": [], "not_copied_up": [],
              "errors": [], "timed_out": False}
    for name in names:
        if time.monotonic() > deadline:
            result["timed_out"] = True
            break
        rnd = Round(opts.merged, opts.lower, opts.upper, name, opts.readers, rng,
                    opts.extra_passes)
        summary = rnd.run()
        result["rounds"] += 1
        result["reads"] += rnd.reads
        result["stats"] += rnd.stats
        result["bad_data"] += rnd.bad_data[:5]
        result["errors"] += rnd.errors[:5]
        if summary["bad_blocks"]:
            result["bad_blocks"].append(summary)
        if not summary["copied_up"]:
            result["not_copied_up"].append(name)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
