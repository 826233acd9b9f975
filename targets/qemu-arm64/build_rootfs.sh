#!/usr/bin/env bash
# Build (once) and cache an arm64 Debian bookworm root filesystem that the `qemu-arm64` target runs the bench
# agent in, emulated by qemu-user (qemu-aarch64-static) on an x86_64 host.
#
#   targets/qemu-arm64/build_rootfs.sh [ROOTFS_DIR]      # default $EDGECOMPRESS_HOME/qemu-arm64-rootfs
#
# Why this shape:
# - Bookworm = Raspberry Pi OS 64-bit's base, so python3 is 3.11 like on a Pi.
# - No binfmt_misc needed (containers and CI runners rarely allow registering it, and registering it changes the
#   whole host): `debootstrap --foreign` only downloads and unpacks; the .debs it leaves are unpacked with the
#   host's dpkg-deb; no maintainer script has to run for python3 to work. The transport then starts the rootfs's
#   python with `qemu-aarch64-static -L ROOTFS`, so nothing inside has to exec another arm64 binary.
# - The runtimes are the aarch64 manylinux wheels, downloaded and unpacked by the host's pip
#   (`--platform manylinux2014_aarch64 --only-binary=:all:`), i.e. the same files `pip install` puts on a Pi.
# - A stamp file records what was built; a second call with the same inputs returns at once.
# Needs: root (debootstrap), debootstrap, qemu-user-static, dpkg-deb, network to deb.debian.org and PyPI.
set -euo pipefail

ROOTFS="${1:-${EDGECOMPRESS_QEMU_ROOTFS:-${EDGECOMPRESS_HOME:-$HOME/.cache/edgecompress}/qemu-arm64-rootfs}}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
PYVER=3.11                      # bookworm's python3
ORT_VERSION="${ORT_VERSION:-1.32.0}"
# numpy: onnxruntime's dependency; 2.x has cp311 aarch64 wheels.
WHEELS="onnxruntime==${ORT_VERSION} numpy"
# WITH_EXECUTORCH=1 adds executorch's aarch64 wheel (1.5.1 ships cp311 manylinux_2_28_aarch64) and the torch it
# needs (the agent's executorch loader passes torch tensors): +~430 MB of torch download, ~1.5 GB unpacked.
WITH_EXECUTORCH="${WITH_EXECUTORCH:-0}"
ET_VERSION="${ET_VERSION:-1.5.1}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
# Only what `import torch` + `executorch.runtime` need: executorch's full dependency list is its toolchain
# (pandas, hydra, coremltools ...), which never runs on the device.
ET_WHEELS="executorch==${ET_VERSION} torch==${TORCH_VERSION} typing-extensions sympy mpmath filelock networkx jinja2 markupsafe fsspec packaging pyyaml flatbuffers"
STAMP_TEXT="suite=${SUITE} python=${PYVER} wheels=${WHEELS} executorch=${WITH_EXECUTORCH} script=3"
STAMP="$ROOTFS/.edgecompress-rootfs-stamp"
SITE_REL="usr/local/lib/python${PYVER}/dist-packages"  # on Debian's sys.path for the rootfs's python3

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ]; then
    echo "rootfs up to date: $ROOTFS ($(cat "$STAMP"))"
    exit 0
fi

missing=""
for tool in debootstrap qemu-aarch64-static dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "missing:$missing -- install with: apt-get install -y --no-install-recommends debootstrap qemu-user-static" >&2
    exit 2
fi
if [ "$(id -u)" != "0" ]; then
    echo "debootstrap needs root (it creates device nodes and root-owned files): run with sudo" >&2
    exit 2
fi

t0=$(date +%s)
rm -rf "$ROOTFS.partial"
mkdir -p "$(dirname "$ROOTFS")"
echo "== debootstrap --foreign --arch=arm64 $SUITE (download + unpack, no arm64 code runs)"
debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,ca-certificates \
    "$SUITE" "$ROOTFS.partial" "$MIRROR"

echo "== unpack the packages debootstrap left for its second stage (python3 and its libraries)"
for deb in "$ROOTFS.partial"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$ROOTFS.partial"
done
# The first stage unpacked usrmerge-style symlinks already (/lib -> usr/lib); the dynamic loader must be there.
test -e "$ROOTFS.partial/lib/ld-linux-aarch64.so.1" || { echo "no arm64 dynamic loader in the rootfs" >&2; exit 1; }
rm -f "$ROOTFS.partial"/var/cache/apt/archives/*.deb
cp "$(command -v qemu-aarch64-static)" "$ROOTFS.partial/usr/bin/"   # lets `chroot ROOTFS /usr/bin/qemu-aarch64-static` work too
mkdir -p "$ROOTFS.partial/tmp" && chmod 1777 "$ROOTFS.partial/tmp"

echo "== aarch64 wheels: $WHEELS"
mkdir -p "$ROOTFS.partial/$SITE_REL"
python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check --target "$ROOTFS.partial/$SITE_REL" \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
    --implementation cp --python-version "$PYVER" --abi "cp${PYVER/./}" --only-binary=:all: $WHEELS

if [ "$WITH_EXECUTORCH" = "1" ]; then
    echo "== aarch64 wheels (--no-deps): $ET_WHEELS"
    python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check --no-deps \
        --target "$ROOTFS.partial/$SITE_REL" \
        --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
        --implementation cp --python-version "$PYVER" --abi "cp${PYVER/./}" --only-binary=:all: $ET_WHEELS
fi

# qemu-user shows the guest the HOST's /proc/cpuinfo (x86) and, with -L, opens ROOTFS/<path> first when it
# exists. Without an ARM description, cpuinfo (the library onnxruntime and XNNPACK use to pick kernels) finds
# no ARM processor and `import onnxruntime` segfaults. So the rootfs carries what a Pi 4's kernel reports:
# 4x Cortex-A72 (MIDR part 0xd08), no asimddp (no sdot/udot), matching the transport's default -cpu cortex-a72.
echo "== /proc/cpuinfo and /sys/devices/system/cpu of a Raspberry Pi 4 (Cortex-A72 x4)"
mkdir -p "$ROOTFS.partial/proc" "$ROOTFS.partial/sys/devices/system/cpu"
: > "$ROOTFS.partial/proc/cpuinfo"
for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i" \
        >> "$ROOTFS.partial/proc/cpuinfo"
done
printf 'Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1 (emulated by qemu-user)\n' >> "$ROOTFS.partial/proc/cpuinfo"
for f in possible present online; do echo "0-3" > "$ROOTFS.partial/sys/devices/system/cpu/$f"; done
echo 3 > "$ROOTFS.partial/sys/devices/system/cpu/kernel_max"

echo "== smoke test inside the emulated CPU"
qemu-aarch64-static -cpu cortex-a72 -L "$ROOTFS.partial" "$ROOTFS.partial/usr/bin/python$PYVER" -I -c \
    "import platform, onnxruntime, numpy; print(platform.machine(), 'python', platform.python_version(), 'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__)"
if [ "$WITH_EXECUTORCH" = "1" ]; then
    qemu-aarch64-static -cpu cortex-a72 -L "$ROOTFS.partial" "$ROOTFS.partial/usr/bin/python$PYVER" -I -c \
        "import torch, executorch.runtime; print('torch', torch.__version__, 'executorch.runtime ok')"
fi

rm -rf "$ROOTFS"
mv "$ROOTFS.partial" "$ROOTFS"
echo "$STAMP_TEXT" > "$STAMP"
echo "== built $ROOTFS in $(( $(date +%s) - t0 )) s ($(du -sh "$ROOTFS" | cut -f1))"
