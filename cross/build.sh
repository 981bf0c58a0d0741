#!/usr/bin/env bash
# Cross-builds the kiosk daemon for an ARM board from a Debian/Ubuntu
# x86-64 machine with only Rust installed: installs the target's GCC (for
# ring's C and assembly, and the final link) with apt-get and the Rust
# target with rustup, then runs cargo with the matching linker.
#
#   cross/build.sh [TARGET] [cargo build options…]
#
#   TARGET   aarch64-unknown-linux-gnu (default: 64-bit boards, i.MX 8,
#            Raspberry Pi 4/5, Rockchip) or armv7-unknown-linux-gnueabihf
#   options  default: --release --no-default-features (frame-directory
#            replay and the GPIO/command sinks; no OpenCV, no V4L2). Add
#            --features camera for V4L2 cameras (needs the target's kernel
#            headers, installed here, and libclang for bindgen).
#
# The binary lands in $CARGO_TARGET_DIR/TARGET/release/facegate-daemon.
# Images for a fleet are built by Yocto (yocto/meta-facegate), which brings
# its own toolchain; this script is for a developer putting a build on one
# board (scp, then systemd/facegate-daemon.service).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:-aarch64-unknown-linux-gnu}"
shift || true
if [ "$#" -eq 0 ]; then
    set -- --release --no-default-features
fi

case "$target" in
    aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu; arch=arm64 ;;
    armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf; arch=armhf ;;
    *) echo "cross/build.sh: unsupported target $target (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" >&2; exit 64 ;;
esac

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
packages=("gcc-$gnu" "libc6-dev-$arch-cross" "linux-libc-dev-$arch-cross")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "cross/build.sh: installing ${missing[*]}"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" libclang-dev >/dev/null
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

upper="$(echo "$target" | tr 'a-z-' 'A-Z_')"
export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
export "CC_${target//-/_}=$gnu-gcc"
export "AR_${target//-/_}=$gnu-ar"
# bindgen (V4L2 headers, with --features camera) parses the target's headers.
export BINDGEN_EXTRA_CLANG_ARGS="--sysroot=/usr/$gnu -I/usr/$gnu/include"
export PKG_CONFIG_SYSROOT_DIR="/usr/$gnu"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/facegate/target}"

cd "$root"
cargo build --locked -p facegate-daemon --target "$target" "$@"
profile=debug
for a in "$@"; do if [ "$a" = "--release" ]; then profile=release; fi; done
binary="$CARGO_TARGET_DIR/$target/$profile/facegate-daemon"
if [ -f "$binary" ]; then
    file "$binary" 2>/dev/null || true
    echo "cross/build.sh: $binary"
fi
