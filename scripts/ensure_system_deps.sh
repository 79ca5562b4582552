#!/usr/bin/env bash
# tinygrad's CPU device compiles its kernels with clang. On a machine without a GPU, tinygrad's OpenCL device through PoCL
# runs kernels on every core (the CPU device uses one), so PoCL is installed there too; a machine with an NVIDIA or AMD GPU
# (or a Mac) runs on the GPU and needs no PoCL. Installs with apt-get on Debian/Ubuntu when run as root, or says what to.
set -euo pipefail
gpu=0
{ [ -e /dev/nvidia0 ] || [ -e /dev/kfd ] || command -v nvidia-smi >/dev/null 2>&1 || [ "$(uname -s)" = "Darwin" ]; } && gpu=1
need_clang=0; need_pocl=0
command -v clang >/dev/null 2>&1 || need_clang=1
if [ $gpu = 0 ] && [ "$(uname -s)" = "Linux" ] && ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then need_pocl=1; fi
[ "$need_clang$need_pocl" = "00" ] && exit 0

pkgs=""; [ $need_clang = 1 ] && pkgs="clang"; [ $need_pocl = 1 ] && pkgs="$pkgs pocl-opencl-icd"
if [ "$(uname -s)" = "Darwin" ]; then
  echo "ssmax_tiny: tinygrad's CPU device needs clang. Install Apple's command line tools: xcode-select --install" >&2
  exit 1
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "ssmax_tiny: installing$([ $need_clang = 1 ] && echo ' clang (tinygrad CPU device)')$([ $need_pocl = 1 ] && echo ' pocl-opencl-icd (tinygrad CL device)') with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null && apt-get install -y -q $pkgs >/dev/null
  command -v clang >/dev/null 2>&1 || { echo "ssmax_tiny: apt-get did not provide clang" >&2; exit 1; }
  exit 0
fi
if [ $need_clang = 1 ]; then
  echo "ssmax_tiny: tinygrad's CPU device needs the C compiler clang, which is not on PATH." >&2
  echo "  Debian/Ubuntu: sudo apt-get install clang$([ $need_pocl = 1 ] && echo ' pocl-opencl-icd')    Fedora: sudo dnf install clang$([ $need_pocl = 1 ] && echo ' pocl')" >&2
  exit 1
fi
# clang is there; PoCL only enables the optional CL device, so its absence is a note, not an error
echo "ssmax_tiny: note: no OpenCL driver found; DEV=CL needs one (Debian/Ubuntu: sudo apt-get install pocl-opencl-icd)" >&2
