"""Function coverage (--coverage): the function tracer limited to the overlay module records
which functions each case reached. VM-free: the kallsyms and source readers, the merge of
reports into coverage.json, the table. VM (boots the default kernel): the same cases traced
and untraced give the same outcomes, and the trace names the functions the cases' system
calls enter."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from overlay_harness import coverage as tool
from overlay_harness.library import tracing
from overlay_harness.results import coverage

ROOT = Path(__file__).resolve().parent.parent


def report(kernel, case, when="teardown", **props):
    names = {"functions": tracing.PROP_FUNCTIONS, "module": tracing.PROP_MODULE_FUNCTIONS,
             "lost": tracing.PROP_FUNCTIONS_LOST}
    user = [("kernel", kernel), ("case", case)] + [(names[k], v) for k, v in props.items()]
    return SimpleNamespace(when=when, user_properties=user)


def test_text_symbols_are_the_modules_functions_without_padding_stubs():
    lines = ["ffffffffc0a01000 t __pfx_ovl_lookup\t[overlay]", "ffffffffc0a01010 t ovl_lookup\t[overlay]",
             "ffffffffc0a02000 T ovl_get_acl\t[overlay]", "ffffffffc0a03000 d ovl_aops\t[overlay]",
             "ffffffffc0b00000 t ext4_lookup\t[ext4]", "ffffffffc0a04000 t ovl_fill_merge.isra.0\t[overlay]",
             "ffffffffc0a05000 t ovl_lookup.cold\t[overlay]"]
    assert tracing.text_symbols(lines, "overlay") == ["ovl_fill_merge.isra.0", "ovl_get_acl", "ovl_lookup"]


def test_module_functions_travel_as_one_property():
    mf = tracing.ModuleFunctions("overlay", ["ovl_a", "ovl_b"], ["ovl_c"])
    again = tracing.ModuleFunctions.from_property("overlay", mf.as_property())
    assert (again.traceable, again.untraceable) == (["ovl_a", "ovl_b"], ["ovl_c"])


def test_reports_merge_into_functions_reached_per_case():
    cov = coverage.Coverage()
    cov.add(report("6.1", "t1", when="setup", module="ovl_a ovl_b ovl_c.isra.0|ovl_d"))
    cov.add(report("6.1", "t1", functions="ovl_a ovl_c.isra.0"))
    cov.add(report("6.1", "t2", functions="ovl_a", lost="12"))
    cov.add(report("6.1", "t3"))  # a case without the property (not traced) adds nothing
    data = cov.to_json()["6.1"]
    assert data["reached"] == {"ovl_a": ["t1", "t2"], "ovl_c.isra.0": ["t1"]}
    assert data["unreached"] == ["ovl_b"] and data["untraceable"] == ["ovl_d"]
    assert data["lost_events"] == {"t2": 12}
    assert coverage.totals(cov.kernels["6.1"]) == (2, 3)
    lines = coverage.summary_lines(cov, {"6.1": {"ovl_a": "super.c", "ovl_b": "super.c", "ovl_c": "util.c"}})
    assert lines[0].startswith("6.1: 2 of 3 traceable overlay functions reached (66.7 %)")
    assert any("super.c" in line and "1 / 2" in line for line in lines)
    assert any(line.strip() == "unreached (1): ovl_b" for line in lines)
    assert coverage.load(json.loads(json.dumps(cov.to_json()))).to_json() == cov.to_json()


def test_source_functions_finds_kernel_style_definitions(tmp_path):
    (tmp_path / "super.c").write_text(
        "static int\novl_statfs(struct dentry *dentry, struct kstatfs *buf)\n{\n\treturn 0;\n}\n"
        "int ovl_sync_status(struct ovl_fs *ofs)\n{\n\tif (x(1))\n\t\treturn 1;\n}\n"
        "static const struct super_operations ovl_super_operations = {\n\t.statfs = ovl_statfs,\n};\n"
        "static int ovl_fwd(int a);\n"
        "static struct dentry *ovl_mount(struct file_system_type *fs_type, int flags,\n"
        "\t\t\t\tconst char *dev_name, void *raw_data)\n{\n\treturn NULL;\n}\n")
    (tmp_path / "overlayfs.h").write_text("static inline bool ovl_is_metacopy(void) { return 1; }\n")
    assert coverage.source_functions(tmp_path) == {
        "ovl_statfs": "super.c", "ovl_sync_status": "super.c", "ovl_mount": "super.c",
        "ovl_is_metacopy": "overlayfs.h"}
    assert coverage.base_name("ovl_cache_put.isra.0") == "ovl_cache_put"


def test_the_table_lists_each_unreached_function_with_its_note(tmp_path):
    cov = coverage.Coverage()
    cov.add(report("6.1", "t1", when="setup", module="ovl_a ovl_b|"))
    cov.add(report("6.1", "t1", functions="ovl_a"))
    text = tool.markdown(cov, {"ovl_b": {"what": "does b", "reachable": "no: module exit"}},
                         {"6.1": {"ovl_a": "super.c", "ovl_b": "util.c"}})
    assert "1 of 2 traceable functions reached (50.0 %)" in text
    assert "| `ovl_b` | util.c | does b | no: module exit |" in text
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps(cov.to_json()))
    assert tool.merged([path, path]).to_json() == cov.to_json()


def test_coverage_with_a_target_is_a_usage_error(pytester):
    pytester.makeconftest('pytest_plugins = ["overlay_harness.plugin"]')
    pytester.makepyfile("def test_x(guest): pass")
    result = pytester.runpytest("--coverage", "--target=ssh://root@127.0.0.1:1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--coverage and --target: the function tracer*"])


CASES = ["cases/test_volatile.py::test_volatile_sync_calls_return_error_every_time[ext4]",
         "cases/test_file_operations.py::test_fallocate_extends_a_lower_file_on_its_upper_copy[ext4]",
         "cases/test_file_operations.py::test_ficlone_on_an_upper_without_reflink_is_eopnotsupp[ext4-copied-up]",
         "cases/test_file_handles.py::test_handle_of_a_deleted_file_is_stale[ext4-copied-up]"]


def run(tmp_path, name, *args):
    out = tmp_path / name
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                        f"--results-dir={out}", *args, *CASES],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    found = sorted(out.glob("run-*/summary.json"))
    assert found, f"pytest {' '.join(args)} wrote no summary.json (exit {p.returncode}):\n{p.stdout[-3000:]}"
    summary = json.loads(found[0].read_text())
    return p, {r["case"]: r["outcome"] for r in summary["results"]}, next(out.glob("run-*"))


@pytest.mark.vm
def test_tracing_changes_no_outcome_and_names_the_functions_reached(tmp_path):
    plain, untraced, _ = run(tmp_path, "plain")
    traced_p, traced, run_dir = run(tmp_path, "traced", "--coverage")
    assert plain.returncode == 0, plain.stdout[-3000:]
    assert traced == untraced and set(traced.values()) == {"passed"}, traced_p.stdout[-3000:]
    assert "overlay function coverage" in traced_p.stdout
    (data,) = json.loads((run_dir / "coverage.json").read_text()).values()
    reached = data["reached"]
    assert len(data["traceable"]) > 100 and set(reached) <= set(data["traceable"])
    assert not data["lost_events"]
    # each case's own system call reaches its overlay entry point, and only that case's
    fsync, = [c for c in reached["ovl_fsync"] if "volatile" in c]
    assert "test_volatile_sync" in fsync
    assert [c.split("::")[1].split("[")[0] for c in reached["ovl_fallocate"]] == [
        "test_fallocate_extends_a_lower_file_on_its_upper_copy"]
    assert any("ficlone" in c for c in reached["ovl_remap_file_range"])
    assert any("handle" in c for c in reached["ovl_fh_to_dentry"])
    assert not any("volatile" in c for c in reached["ovl_fh_to_dentry"])
