#!/usr/bin/env bash
# tinygrad's CPU device compiles its kernels with clang. On a machine without a GPU, tinygrad's OpenCL device through PoCL
# runs kernels on every core (the CPU device uses one), so PoCL is installed there too; a machine with an NVIDIA or AMD GPU
# (or a Mac) runs on the GPU and needs no PoCL. Installs with apt-get on Debian/Ubuntu when run as root, or says what to.
set -euo pipefail
# `ensure_system_deps.sh gpu-build`: Debian's LLVM 19 library too, for make gpu-build's AMD target (tinygrad's LLVM renderer)
if [ "${1:-}" = "gpu-build" ]; then
  for f in /usr/lib/*/libLLVM-1[7-9]*.so* /usr/lib/*/libLLVM-2[0-9]*.so*; do [ -e "$f" ] && exit 0; done
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && apt-cache show libllvm19 >/dev/null 2>&1; then
    echo "ssmax_tiny: installing libllvm19 (AMD kernels for make gpu-build) with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libllvm19 >/dev/null && exit 0
  fi
  echo "ssmax_tiny: note: no LLVM 17 or later; make gpu-build skips AMD (Debian/Ubuntu: sudo apt-get install libllvm19)" >&2
  exit 0
fi
gpu=0
{ [ -e /dev/nvidia0 ] || [ -e /dev/kfd ] || command -v nvidia-smi >/dev/null 2>&1 || [ "$(uname -s)" = "Darwin" ]; } && gpu=1
need_clang=0; need_pocl=0; bf16_clang=""
command -v clang >/dev/null 2>&1 || need_clang=1
# bfloat16 on tinygrad's CPU device needs clang 15 or later (Debian 12's clang is 14): clang-19 where apt-get has it
command -v clang-19 >/dev/null 2>&1 || { command -v apt-cache >/dev/null 2>&1 && apt-cache show clang-19 >/dev/null 2>&1 && bf16_clang=clang-19; }
if [ $gpu = 0 ] && [ "$(uname -s)" = "Linux" ] && ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then need_pocl=1; fi
[ "$need_clang$need_pocl" = "00" ] && [ -z "$bf16_clang" ] && exit 0

pkgs="$bf16_clang"; [ $need_clang = 1 ] && pkgs="$pkgs clang"; [ $need_pocl = 1 ] && pkgs="$pkgs pocl-opencl-icd"
if [ "$(uname -s)" = "Darwin" ]; then
  echo "ssmax_tiny: tinygrad's CPU device needs clang. Install Apple's command line tools: xcode-select --install" >&2
  exit 1
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "ssmax_tiny: installing with apt-get:$([ $need_clang = 1 ] && echo ' clang (tinygrad CPU device)')$([ -n "$bf16_clang" ] && echo " $bf16_clang (bfloat16 on the CPU device)")$([ $need_pocl = 1 ] && echo ' pocl-opencl-icd (tinygrad CL device)')"
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
# clang is there; PoCL and clang-19 only enable the CL device and bfloat16 on the CPU device: notes, not errors
[ $need_pocl = 1 ] && echo "ssmax_tiny: note: no OpenCL driver found; DEV=CL needs one (Debian/Ubuntu: sudo apt-get install pocl-opencl-icd)" >&2
[ -n "$bf16_clang" ] && echo "ssmax_tiny: note: bfloat16 on the CPU device needs clang 15 or later (Debian 12: sudo apt-get install clang-19)" >&2
exit 0
