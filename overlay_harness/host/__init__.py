"""Layer 2, the host's VM runtime: which kernel to boot (kernel.py), KVM or TCG
(accel.py), starting vng under a reaper that outlives nothing (vng.py, reaper.py), one
VM and its console (vm.py), a running machine over SSH used as a VM is (target.py:
--target), the host's end of the agent protocol and the errors that
mean "the VM or the harness broke" (agent_client.py), and the kernel-log policy
(splat.py, splats.toml). Data read by path: overlay-harness.config (the kernel config
fragment; images/overlay-harness.config links to it) and splats.toml."""
