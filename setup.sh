#!/usr/bin/env bash
# One-time (idempotent) set-up on Debian or Ubuntu: host packages the guest needs
# (the guest boots on the host's root filesystem), the default kernel, and a
# virtual environment with the Python dependencies in .venv/.
# Nothing is started on the host: sshd is installed for the guest only.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

PACKAGES=(
  qemu-system-x86 openssh-server openssh-client busybox-static udev kmod iproute2
  dmsetup e2fsprogs xfsprogs btrfs-progs attr util-linux
  nfs-kernel-server nfs-common rpcbind
  python3 python3-venv
  linux-image-amd64
  make gcc patch libelf1    # the patch loop (--overlay-src) builds overlay.ko on the host
  chromium                  # tests/test_report_browser.py opens report.html in headless Chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  # Keep package scripts from starting services (sshd) on the host.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$guard" >/dev/null
    "${SUDO[@]}" chmod 755 "$guard"
  fi
  trap '[ -n "$guard" ] && "${SUDO[@]}" rm -f "$guard"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
  echo "setup: no kernel under /boot after installing linux-image-amd64" >&2
  exit 1
fi

# Python side: .venv with this project and its dependencies (re-done when pyproject.toml changes).
stamp=.venv/.pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv"
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
  echo "$want" > "$stamp"
fi
echo "setup: ready ($(ls /boot/vmlinuz-* | sed 's|/boot/vmlinuz-||' | tr '\n' ' '))"
