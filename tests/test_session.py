"""The plugin's per-VM records: one per kernel, though a worker's VMs share its name; and the
number of workers `-n auto` starts."""

from types import SimpleNamespace

import pytest

from overlay_harness.plugin import session
from overlay_harness.plugin.session import HarnessState

pytest_plugins = ["pytester"]


def test_each_kernels_vm_of_a_worker_has_its_own_record():
    state = HarnessState.__new__(HarnessState)   # no pytest config needed for the records
    state.uses = {}
    vm61 = SimpleNamespace(name="ovh-1-gw0", kernel=SimpleNamespace(release="6.1.0-56-amd64"))
    vm73 = SimpleNamespace(name="ovh-1-gw0", kernel=SimpleNamespace(release="7.3-amd64"))
    state.use(vm61).facts = "6.1's modules"
    assert state.use(vm73).facts is None          # a 7.3 boot does not inherit 6.1's facts
    assert state.use(vm61).facts == "6.1's modules"


def auto_workers(pytester, monkeypatch, *args, available_gib):
    """What `-n auto` would start, and xdist's own CPU count, with `available_gib` free memory."""
    xdist_plugin = pytest.importorskip("xdist.plugin")
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr(session, "mem_available_bytes", lambda: available_gib << 30)
    config = pytester.parseconfig("-p", "overlay_harness.plugin", "-p", "xdist", *args)
    return config.hook.pytest_xdist_auto_num_workers(config=config), \
        xdist_plugin.pytest_xdist_auto_num_workers(config)


def test_auto_workers_are_as_many_as_the_free_memory_holds(pytester, monkeypatch):
    """--vm-memory=20G with 23 GiB free: one VM fits, whatever the CPUs (the review measured
    xdist's CPU count winning: 2 on 2 CPUs)."""
    chosen, cpus = auto_workers(pytester, monkeypatch, "--vm-memory=20G", available_gib=23)
    if cpus < 2:
        pytest.skip("one CPU: the CPU count and the memory agree")
    assert chosen == 1
    chosen, cpus = auto_workers(pytester, monkeypatch, "--vm-memory=1G", available_gib=1024)
    assert chosen == cpus  # memory to spare: one worker per CPU


def test_auto_workers_of_a_passive_plugin_are_xdists(pytester, monkeypatch):
    chosen, cpus = auto_workers(pytester, monkeypatch, available_gib=1)
    assert chosen == cpus
    pytester.makeconftest('pytest_plugins = ["overlay_harness.plugin"]\n')  # a project of harness cases
    chosen, cpus = auto_workers(pytester, monkeypatch, available_gib=3)
    assert chosen == 1  # 3 GiB hold one 2G VM and its QEMU


def test_a_foreign_fixture_named_upper_fs_is_left_alone(pytester):
    pytester.makepyfile(test_own="import pytest\n\n@pytest.fixture\ndef upper_fs():\n    return 'mine'\n\n"
                                 "def test_u(upper_fs):\n    assert upper_fs == 'mine'\n")
    result = pytester.runpytest("-p", "overlay_harness.plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_collect_only_starts_no_kvm_probe(pytester, monkeypatch):
    """`pytest --co` of an active run lists the cases without finding out the accelerator
    (with no cached verdict, a KVM probe boot of up to 60 s)."""
    from test_report import bzimage

    from overlay_harness.host import accel as accel_mod

    probes = []
    monkeypatch.setattr(accel_mod, "resolve", lambda *a, **kw: probes.append(a) or accel_mod.Accel(
        name="tcg", reason="a probe in this test"))
    image = bzimage(pytester.path / "vmlinuz-6.9.0-test", "6.9.0-test")
    pytester.makepyfile(test_k="def test_k(kernel):\n    pass\n")
    plugins = ["-p", "overlay_harness.plugin", "-p", "no:cacheprovider", f"--kernel={image}"]
    result = pytester.runpytest(*plugins, "--co")
    assert result.ret == 0
    assert probes == []
    assert "kernel: 6.9.0-test" in result.stdout.str()
    assert pytester.runpytest(*plugins).ret == 0
    assert len(probes) == 1  # a run of the case finds it out
