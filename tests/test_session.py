"""The plugin's per-VM records: one per kernel, though a worker's VMs share its name."""

from types import SimpleNamespace

from overlay_harness.plugin.session import HarnessState


def test_each_kernels_vm_of_a_worker_has_its_own_record():
    state = HarnessState.__new__(HarnessState)   # no pytest config needed for the records
    state.uses = {}
    vm61 = SimpleNamespace(name="ovh-1-gw0", kernel=SimpleNamespace(release="6.1.0-56-amd64"))
    vm73 = SimpleNamespace(name="ovh-1-gw0", kernel=SimpleNamespace(release="7.3-amd64"))
    state.use(vm61).facts = "6.1's modules"
    assert state.use(vm73).facts is None          # a 7.3 boot does not inherit 6.1's facts
    assert state.use(vm61).facts == "6.1's modules"
