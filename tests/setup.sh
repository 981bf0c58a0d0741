#!/usr/bin/env bash
# Installs the system packages facegate builds and tests need, when missing:
# OpenCV and libclang (video replay, RTSP and V4L2 sources), systemd's tools
# (unit checks). Idempotent and quiet when everything is there. Uses apt-get
# as root, or through sudo.
set -euo pipefail

need=()
pkg-config --exists opencv4 2>/dev/null || need+=(libopencv-dev)
{ ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/*/libclang*.so* >/dev/null 2>&1; } || need+=(libclang-dev)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v pkill >/dev/null 2>&1 || need+=(procps)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "tests/setup.sh: installing ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "tests/setup.sh: need root or sudo to install ${need[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
