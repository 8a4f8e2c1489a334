"""overlay-harness: overlayfs and VFS regression cases on real kernels under QEMU."""
