"""`git bisect run` step: build the kernel tree here with the suite's config fragment,
run the chosen cases on it, and answer good (0), bad (1) or skip (125).

    cd ~/src/linux
    git bisect start v6.12 v6.11
    git bisect run ~/overlay-harness/.venv/bin/python -m overlay_harness.bisect \\
        cases/test_volatile.py -k "fsync and ext4"

Everything after the options is handed to pytest: case paths relative to the harness's
checkout (from an installed package, which has no case suite: to the current directory),
and a -k or -m expression without a path selects among the harness's cases. Each step's
results go under results/bisect/ in the current directory (--results-dir).
Exit status, as git bisect reads it:
  0    the cases passed (xfail of a known_issue counts as passing: add --runxfail to
       bisect a known issue itself)
  1    a case failed or errored on this kernel
  125  this commit cannot be tested: the kernel did not build, did not boot, or every
       chosen case was skipped (its config lacks what they need)
  128  stop bisecting: the selection matched no case, or pytest was interrupted or
       misused (a problem of the command line, not of the commit)
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .host import kernel as kernel_mod
from .host.vng import vng_command, vng_env

GOOD, BAD, SKIP, ABORT = 0, 1, 125, 128
ROOT = Path(__file__).resolve().parent.parent
BOOT_CASE = "cases/test_boot.py::test_guest_runs_chosen_kernel"
# infra_error kinds (HarnessError.kind) that mean the kernel did not come up or did not
# stay up: a commit that cannot be tested rather than a bad one.
UNTESTABLE = {"boot", "lost"}


def log(msg):
    print(f"overlay_harness.bisect: {msg}", file=sys.stderr, flush=True)


def build(tree, fragment, reconfigure=True, jobs=None):
    """vng --build with the fragment; True when arch/x86/boot/bzImage came out of it."""
    vng = vng_command()
    if reconfigure or not (tree / ".config").is_file():
        # The same .config for every commit: virtme-ng's defconfig + the fragment.
        p = subprocess.run([vng, "--kconfig", "--config", str(fragment)], cwd=tree, check=False,
                           env=vng_env(vng))
        if p.returncode != 0:
            log(f"configuring failed (vng --kconfig exit {p.returncode})")
            return False
    argv = [vng, "--build", "--config", str(fragment)]
    if jobs:
        argv += ["--jobs", str(jobs)]
    image = tree / "arch/x86/boot/bzImage"
    before = image.stat().st_mtime if image.is_file() else None
    p = subprocess.run(argv, cwd=tree, check=False, env=vng_env(vng))
    if p.returncode != 0:
        log(f"build failed (vng --build exit {p.returncode})")
        return False
    if not image.is_file():
        log(f"build ended without {image}")
        return False
    if before is not None and image.stat().st_mtime < before:
        log(f"{image} is older than before the build")
        return False
    return True


def verdict(summary, pytest_status):
    """(exit status, why) from the run's summary.json (results/recorder.py) and pytest's
    status. Only fields are read: outcome, infra_error, boot_failure; never messages."""
    if pytest_status == 3 and summary and summary.get("boot_failure"):
        # the plugin stops a one-kernel run with status 3 when the VM cannot boot
        return SKIP, summary["boot_failure"]
    if pytest_status in (2, 3, 4, 5):
        what = {2: "interrupted", 3: "an internal error", 4: "a usage error", 5: "no case selected"}
        return ABORT, f"pytest ended with {what[pytest_status]} (exit {pytest_status})"
    if summary is None:
        return SKIP, "no summary.json: the run did not get as far as any case"
    results = summary.get("results", [])
    boot = [r for r in results if r["nodeid"].endswith(BOOT_CASE.split("::")[-1])
            and r["nodeid"].startswith(BOOT_CASE.split("::")[0])]
    if boot and boot[0]["outcome"] not in ("passed",):
        return SKIP, f"the kernel did not boot or ran something else: {boot[0].get('message', '')}"
    chosen = [r for r in results if r not in boot] or boot
    bad = [r for r in chosen if r["outcome"] in ("failed", "error")]
    if bad and all(r["outcome"] == "error" and r.get("infra_error") in UNTESTABLE for r in bad):
        return SKIP, "the VM did not come up: " + bad[0].get("message", "")
    if bad:
        return BAD, "; ".join(f"{r['case']}: {r['outcome']}" for r in bad[:5])
    if not any(r["outcome"] in ("passed", "xfailed", "xpassed") for r in chosen):
        return SKIP, "every chosen case was skipped"
    return GOOD, f"{len(chosen)} cases ran, none failed"


def suite_dir():
    """Where case paths are read from: the harness's checkout, which has the case suite;
    an installed wheel has none (cases/ is not in it), so there the current directory."""
    return ROOT if (ROOT / "cases").is_dir() else Path.cwd()


def selection(pytest_args, where):
    """pytest's arguments for one step, or None when they name no case file and `where`
    has no case suite. A -k/-m expression without a path selects among the suite's cases;
    the boot case comes along where there is one (a -k may deselect it: then a boot failure
    shows as the chosen cases' errors, or as the run's boot_failure)."""
    args = list(pytest_args)
    if not any(not a.startswith("-") and (where / a.split("::", 1)[0]).exists() for a in args):
        if not (where / "cases").is_dir():
            return None
        args.append("cases")
    boot_file = where / BOOT_CASE.split("::", 1)[0]
    paths = [where / a.split("::", 1)[0] for a in args if not a.startswith("-")]
    covered = any(p == boot_file or p in boot_file.parents for p in paths if p.exists())
    if boot_file.is_file() and not covered:  # (pytest 8.1, given a directory and a node id in it,
        # collects only the node id)
        args.append(BOOT_CASE)
    return args


def run_cases(tree, pytest_args, results_dir, python=sys.executable):
    where = suite_dir()
    argv = [python, "-m", "pytest", "-p", "overlay_harness.results.recorder", "-p", "no:cacheprovider",
            f"--kernel={tree}", f"--results-dir={Path(results_dir).resolve()}",
            *selection(pytest_args, where)]
    log(f"running in {where}: " + " ".join(argv))
    out_file = Path(results_dir) / "pytest.log"
    with open(out_file, "w") as out:
        proc = subprocess.Popen(argv, cwd=where, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        for line in proc.stdout:   # shown as it comes, and kept in pytest.log
            sys.stdout.write(line)
            out.write(line)
        status = proc.wait()
    summaries = sorted(Path(results_dir).glob("*/summary.json"))
    summary = json.loads(summaries[-1].read_text()) if summaries else None
    return status, summary


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m overlay_harness.bisect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, default=Path.cwd(), help="kernel tree (default: here)")
    ap.add_argument("--config", type=Path, default=kernel_mod.FRAGMENT, help="config fragment")
    ap.add_argument("--keep-config", action="store_true",
                    help="build with the tree's .config as it is (default: remake it from "
                         "virtme-ng's defconfig and the fragment at every step)")
    ap.add_argument("--no-build", action="store_true", help="test the tree as it is built")
    ap.add_argument("--jobs", type=int, default=None, help="make -j for the build")
    ap.add_argument("--results-dir", type=Path, default=Path("results") / "bisect",
                    help="where each step's results go (default: results/bisect/ in the current "
                         "directory)")
    ap.add_argument("pytest_args", nargs=argparse.REMAINDER,
                    help="cases and pytest options (default: the harness's cases/)")
    args = ap.parse_args(argv)
    tree = args.tree.resolve()
    pytest_args = [a for a in args.pytest_args if a != "--"]
    if not (tree / "Makefile").is_file():
        log(f"{tree} is not a kernel tree")
        return ABORT
    if selection(pytest_args, suite_dir()) is None:
        log(f"no case file among {pytest_args} and no cases/ in {suite_dir()} (an installed "
            "overlay-harness has no case suite): name the case files to run")
        return ABORT
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip() or "unknown"
    if not args.no_build and not build(tree, args.config.resolve(), not args.keep_config, args.jobs):
        log(f"{commit}: skip (does not build)")
        return SKIP
    step_dir = args.results_dir.resolve() / f"{commit}-{time.strftime('%Y%m%d-%H%M%S')}"
    step_dir.mkdir(parents=True, exist_ok=True)
    status, summary = run_cases(tree, pytest_args, step_dir)
    code, why = verdict(summary, status)
    word = {GOOD: "good", BAD: "bad", SKIP: "skip", ABORT: "abort"}[code]
    log(f"{commit}: {word} ({why}); results in {step_dir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
