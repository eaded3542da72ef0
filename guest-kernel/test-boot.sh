#!/usr/bin/env bash
# Smoke boot of the sbx guest kernel under `qemu-system-x86_64 -M microvm`: a busybox
# initramfs checks the serial console, SMP, a virtio-blk ext4 disk (/dev/vda), overlayfs,
# a virtio-console port, virtio-net, namespaces and cgroup2, then `reboot -f`.
#
# usage: guest-kernel/test-boot.sh [VMLINUX]
#   VMLINUX defaults to $SBX_KERNEL, else /var/cache/sbx/kernel/current/vmlinux
#   (guest-kernel/build.sh makes it).
# env:  SBX_TEST_ACCEL    tcg (default) or kvm
#       SBX_TEST_MACHINE  microvm options (default: microvm,acpi=off)
#       SBX_TEST_SMP      vCPUs (default 2)
#       SBX_TEST_APPEND   extra kernel cmdline (default cmdline:
#                         console=ttyS0 reboot=t panic=-1 quiet)
#       SBX_TEST_INITRD   gzip (default) or none: initramfs compression
#       SBX_TEST_VERBOSE  1: print the guest's serial output
#       SBX_TEST_TIMEOUT  seconds before qemu is killed (default 120)
# exit: 0 passed, 1 failed, 77 skipped (no kernel, qemu, busybox or mkfs.ext4).
set -euo pipefail

kernel=${1:-${SBX_KERNEL:-/var/cache/sbx/kernel/current/vmlinux}}
accel=${SBX_TEST_ACCEL:-tcg}
machine=${SBX_TEST_MACHINE:-microvm,acpi=off}
smp=${SBX_TEST_SMP:-2}
append="console=ttyS0 reboot=t panic=-1 quiet ${SBX_TEST_APPEND:-}"
busybox=/bin/busybox

skip() { echo "test-boot: SKIP: $*" >&2; exit 77; }
fail() { echo "test-boot: FAIL: $*" >&2; exit 1; }

[ -f "$kernel" ] || skip "no kernel at $kernel (run guest-kernel/build.sh)"
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    skip "no static $busybox (apt-get install busybox-static)"
fi
command -v mkfs.ext4 >/dev/null || skip "mkfs.ext4 not installed (e2fsprogs)"
command -v cpio >/dev/null || skip "cpio not installed"

work=$(mktemp -d)
# shellcheck disable=SC2064 # expand now: the path is fixed
trap "rm -rf '$work'" EXIT

# --- initramfs ------------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,mnt,tmp}
cp "$busybox" "$root/bin/busybox"
# /dev/console lets the kernel hand init its stdio; without root, init reopens it.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
echo "sbx-init-uptime $(cut -d' ' -f1 /proc/uptime)"
echo sbx-guest-ok
echo "sbx-uname $(uname -r)"
echo "sbx-cpus $(grep -c ^processor /proc/cpuinfo)"
mount -t sysfs sys /sys
if [ -b /dev/vda ] && mount -t ext4 /dev/vda /mnt; then
    echo "sbx-disk $(cat /mnt/hello)"
    mount -t tmpfs tmp /tmp && mkdir /tmp/u /tmp/w /tmp/m &&
        mount -t overlay ov -o lowerdir=/mnt,upperdir=/tmp/u,workdir=/tmp/w /tmp/m &&
        echo new >/tmp/m/new && rm /tmp/m/hello && [ ! -e /tmp/m/hello ] &&
        [ -c /tmp/u/hello ] && echo sbx-overlay-ok
fi
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = sbx.test ] && echo sbx-port-payload >"/dev/${p##*/}" &&
        echo "sbx-port ${p##*/}"
done
[ -e /sys/class/net/eth0 ] && echo sbx-net eth0
unshare -m -u -i -n -p -f sh -c 'hostname inner && [ "$(hostname)" = inner ]' && echo sbx-ns-ok
mount -t cgroup2 none /sys/fs/cgroup && echo "sbx-cgroup2 $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "sbx-done $(cut -d' ' -f1 /proc/uptime)"
reboot -f
EOF
chmod 755 "$root/init"
initrd=$work/initrd.cpio
(cd "$root" && find . | cpio -o -H newc --quiet) >"$initrd"
if [ "${SBX_TEST_INITRD:-gzip}" = gzip ]; then
    gzip -1 "$initrd"
    initrd=$initrd.gz
fi

# --- disk: ext4 with one file ------------------------------------------------------
mkdir "$work/disk"
echo hello-from-vda >"$work/disk/hello"
truncate -s 16M "$work/disk.img"
mkfs.ext4 -q -F -d "$work/disk" "$work/disk.img"

# --- boot -----------------------------------------------------------------------
cpu=max
[ "$accel" = kvm ] && cpu=host,-arch-capabilities
# shellcheck disable=SC2054 # commas inside arguments
qemu=(qemu-system-x86_64 -M "$machine" -accel "$accel" -cpu "$cpu" -m 256 -smp "$smp"
    -nodefaults -no-user-config -display none -no-reboot -serial stdio
    -kernel "$kernel" -initrd "$initrd" -append "$append"
    -drive "id=d0,file=$work/disk.img,format=raw,if=none" -device virtio-blk-device,drive=d0
    -device virtio-serial-device
    -chardev "file,id=port0,path=$work/port.out" -device virtserialport,chardev=port0,name=sbx.test
    -netdev user,id=n0 -device virtio-net-device,netdev=n0)

log=$work/serial.log
t0=$EPOCHREALTIME
t_init=
rc=0
while IFS= read -r line; do
    line=${line%$'\r'}
    printf '%s\n' "$line" >>"$log"
    [ "${SBX_TEST_VERBOSE:-0}" = 1 ] && printf '  | %s\n' "$line"
    [ -z "$t_init" ] && [ "$line" = sbx-guest-ok ] && t_init=$EPOCHREALTIME
done < <(timeout "${SBX_TEST_TIMEOUT:-120}" "${qemu[@]}" </dev/null 2>&1; echo "sbx-qemu-exit $?")
t1=$EPOCHREALTIME

ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", (b - a) * 1000}'; }
got() { grep -qxF -- "$1" "$log" || { echo "test-boot: missing: $1" >&2; rc=1; }; }

got sbx-guest-ok
got "sbx-qemu-exit 0"
grep -qxE 'sbx-uname 6\.1\.[0-9]+-sbx' "$log" || { echo "test-boot: uname is not 6.1.x-sbx" >&2; rc=1; }
got "sbx-cpus $smp"
got "sbx-disk hello-from-vda"
got sbx-overlay-ok
grep -qxE 'sbx-port vport[0-9]+p[0-9]+' "$log" || { echo "test-boot: no virtio-console port" >&2; rc=1; }
[ "$(cat "$work/port.out" 2>/dev/null)" = sbx-port-payload ] || { echo "test-boot: nothing on the port" >&2; rc=1; }
got "sbx-net eth0"
got sbx-ns-ok
if ! grep -qE '^sbx-cgroup2 .*memory' "$log" || ! grep -qE '^sbx-cgroup2 .*pids' "$log"; then
    echo "test-boot: cgroup2 lacks memory or pids" >&2
    rc=1
fi

if [ "$rc" -ne 0 ]; then
    echo "--- serial output ---" >&2
    cat "$log" >&2
    fail "$kernel did not pass (accel=$accel machine=$machine)"
fi
uptime_init=$(sed -n 's/^sbx-init-uptime //p' "$log")
echo "test-boot: ok: $(sed -n 's/^sbx-uname //p' "$log"), accel=$accel, machine=$machine"
echo "test-boot: guest uptime at init ${uptime_init} s; qemu start to init $(ms "$t0" "$t_init") ms; start to exit $(ms "$t0" "$t1") ms"
