#!/usr/bin/env bash
# One-time (idempotent) set-up on Debian or Ubuntu (elsewhere: the preflight at the end names
# what to install): host packages the guest needs
# (the guest boots on the host's root filesystem), the default kernel, and a
# virtual environment with the Python dependencies in .venv/.
# Nothing is started on the host: the NFS server and sshd are installed for the guest only
# (sshd: the SSH-target tests start their own, on 127.0.0.1, with a config of their own).
set -euo pipefail
cd "$(dirname "$0")"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

# Which distribution: Debian and Ubuntu (and their derivatives) get their packages installed;
# elsewhere the preflight at the end names what is missing.
ID="" ID_LIKE="" PRETTY_NAME=""
# shellcheck disable=SC1091
if [ -r /etc/os-release ]; then . /etc/os-release; fi
case " $ID $ID_LIKE " in
  *" ubuntu "*) KERNEL_PACKAGE=linux-image-generic   # Ubuntu's: linux-image-amd64 does not exist there
               BROWSER_PACKAGE="" ;;                   # Ubuntu's chromium is a snap; runners have Chrome
  *" debian "*) KERNEL_PACKAGE=linux-image-amd64 BROWSER_PACKAGE=chromium ;;
  *) KERNEL_PACKAGE="" BROWSER_PACKAGE="" ;;
esac

PACKAGES=(
  qemu-system-x86 busybox-static udev kmod iproute2
  dmsetup e2fsprogs xfsprogs btrfs-progs attr util-linux
  nfs-kernel-server nfs-common rpcbind
  openssh-server            # the SSH-target tests (tests/test_target*.py): installed, never started here
  python3 python3-venv
  "$KERNEL_PACKAGE"
  make gcc patch libelf1    # the patch loop (--overlay-src) builds overlay.ko on the host
  $BROWSER_PACKAGE          # tests/test_report_browser.py opens report.html in headless Chromium
)

if [ -z "$KERNEL_PACKAGE" ]; then
  echo "setup: ${PRETTY_NAME:-this distribution} is neither Debian nor Ubuntu: install the host" \
       "packages yourself (the preflight below names the commands missing)" >&2
else
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done

  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    # Keep package scripts from starting services (rpcbind, the NFS server, sshd) on the host.
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
    echo "setup: no kernel under /boot after installing $KERNEL_PACKAGE" >&2
    exit 1
  fi
fi

# Ubuntu installs kernel images readable by root only: vng, run as this user, could not boot them.
# OVERLAY_HARNESS_READABLE_BOOT=1 (CI runners: action.yml sets it) makes them readable instead.
for image in /boot/vmlinuz-*; do
  if [ -e "$image" ] && [ ! -r "$image" ] && [ "${OVERLAY_HARNESS_READABLE_BOOT:-}" = 1 ]; then
    echo "setup: making $image readable (OVERLAY_HARNESS_READABLE_BOOT=1)"
    "${SUDO[@]}" chmod 0644 "$image"
  fi
  if [ -e "$image" ] && [ ! -r "$image" ]; then
    echo "setup: $image is not readable by $(id -un) (Ubuntu installs kernel images mode 0600)." >&2
    echo "setup: fix: sudo chmod 0644 /boot/vmlinuz-*   (and for every future kernel:" >&2
    echo "setup:      sudo dpkg-statoverride --update --add root root 0644 $image)" >&2
    exit 1
  fi
done

# Python side: .venv with this project and its dependencies (re-done when pyproject.toml changes).
stamp=.venv/.pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv"
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
  echo "$want" > "$stamp"
fi
# What the suite needs from this machine, each missing piece named with its fix.
.venv/bin/python -m overlay_harness.preflight
echo "setup: ready ($(ls /boot/vmlinuz-* | sed 's|/boot/vmlinuz-||' | tr '\n' ' '))"
