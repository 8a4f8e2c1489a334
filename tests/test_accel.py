"""Accelerator choice: the KVM probe, its cache, and the fall-back to TCG (no VM)."""

import os
import time

import pytest

from overlay_harness.host import accel


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class FakeKernel:
    release = "6.1.0-test"
    run_arg = "/boot/vmlinuz-test"


def fake_vng(tmp_path, monkeypatch, body):
    script = tmp_path / "vng"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    monkeypatch.setattr(accel, "vng_command", lambda: str(script))
    return script


def test_tcg_when_asked():
    assert accel.resolve("tcg", FakeKernel()).name == "tcg"


def test_missing_device_is_not_usable():
    usable, why = accel.kvm_device_usable("/nonexistent/kvm")
    assert not usable and "No such file" in why


def test_kvm_asked_but_unusable_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: (False, "/dev/kvm: Permission denied"))
    with pytest.raises(ValueError, match="Permission denied"):
        accel.resolve("kvm", FakeKernel())


def test_auto_without_kvm_device_is_tcg_without_probing(monkeypatch):
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: (False, "/dev/kvm: No such file"))
    monkeypatch.setattr(accel, "probe_kvm", lambda k: pytest.fail("must not probe"))
    a = accel.resolve("auto", FakeKernel())
    assert a.name == "tcg" and "No such file" in a.reason and a.vng_args() == ["--disable-kvm"]


def test_probe_verdict_is_cached_per_host(monkeypatch):
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: (True, "ok"))
    calls = []

    def probe(k):
        calls.append(k)
        return False, "a KVM guest printed nothing in 12 s (hangs after the firmware)", 12.0

    monkeypatch.setattr(accel, "probe_kvm", probe)
    first = accel.resolve("auto", FakeKernel())
    second = accel.resolve("auto", FakeKernel())
    assert len(calls) == 1
    assert first.name == second.name == "tcg"
    assert "hangs after the firmware" in second.reason and "cached" in second.reason
    accel.resolve("auto", FakeKernel(), reprobe=True)
    assert len(calls) == 2


def test_inconclusive_probe_is_not_cached(monkeypatch):
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: (True, "ok"))
    monkeypatch.setattr(accel, "probe_kvm", lambda k: (None, "vng: command not found", 0.1))
    assert accel.resolve("auto", FakeKernel()).name == "tcg"
    assert accel.cached_verdict() is None


def test_probe_detects_a_silent_hang_quickly(tmp_path, monkeypatch):
    fake_vng(tmp_path, monkeypatch, f"echo $$ > {tmp_path}/pid; exec sleep 300")
    monkeypatch.setattr(accel, "PROBE_FIRST_OUTPUT_S", 1.0)
    start = time.monotonic()
    works, reason, _ = accel.probe_kvm(FakeKernel())
    assert works is False and "printed nothing" in reason
    assert time.monotonic() - start < 15
    pid = int((tmp_path / "pid").read_text())
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()


@pytest.mark.parametrize("body, verdict", [
    ("echo 'Linux version 6.1.0'; exit 0", True),
    ("echo 'qemu-system-x86_64: kvm_buf_set_msrs: Assertion failed' >&2; exit 255", False),
    ("echo 'vng: some unrelated failure' >&2; exit 1", None),
])
def test_probe_verdicts(tmp_path, monkeypatch, body, verdict):
    fake_vng(tmp_path, monkeypatch, body)
    assert accel.probe_kvm(FakeKernel())[0] is verdict
