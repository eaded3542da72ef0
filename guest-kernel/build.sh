#!/usr/bin/env bash
# Build the sbx guest kernel from Debian's linux-source-6.1 with guest-kernel/sbx.config
# applied on top of `make tinyconfig`, into a cache outside the repository:
#
#   ${SBX_KERNEL_CACHE:-/var/cache/sbx/kernel}/<KEY>/{vmlinux,bzImage,config,version}
#   ${SBX_KERNEL_CACHE:-/var/cache/sbx/kernel}/current -> <KEY>
#
# KEY = first 32 hex digits of sha256(sbx.config + this script's version line +
# "linux-source-6.1 <package version>"). A cached build is reused at once. The last
# line of stdout is the path of vmlinux.
#
# usage: guest-kernel/build.sh [--key]     (--key: print KEY and exit, build nothing)
# env:   SBX_KERNEL_CACHE (cache root), SBX_KERNEL_JOBS (make -j, default nproc)
set -euo pipefail

# shellcheck disable=SC2034 # read back by compute_key, from this file
SBX_KERNEL_BUILD_VERSION=1 # bump to invalidate every cached kernel

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$here/sbx.config
cache=${SBX_KERNEL_CACHE:-/var/cache/sbx/kernel}
src_pkg=linux-source-6.1
src_tar=/usr/src/linux-source-6.1.tar.xz
PACKAGES=("$src_pkg" build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils)

say() { printf 'guest-kernel: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        # shellcheck disable=SC2016 # ${Status} is dpkg-query's
        [ "$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null)" = "install ok installed" ] ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "missing packages (run as root to install): ${missing[*]}"
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

compute_key() {
    local pkg_version
    # shellcheck disable=SC2016 # ${Version} is dpkg-query's
    pkg_version=$(dpkg-query -W -f '${Version}' "$src_pkg")
    {
        cat "$fragment"
        grep -m1 '^SBX_KERNEL_BUILD_VERSION=' "${BASH_SOURCE[0]}"
        echo "$src_pkg $pkg_version"
    } | sha256sum | cut -c1-32
}

# Point $cache/current at $1, atomically.
set_current() {
    ln -sfn "$1" "$cache/.current.$$"
    mv -T "$cache/.current.$$" "$cache/current"
}

# Every CONFIG_ line of the fragment must hold in the final .config.
check_config() {
    local cfg=$1 bad=0 line name want got
    while IFS= read -r line; do
        if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
            name=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
        elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            name=${BASH_REMATCH[1]} want=n
        else
            continue
        fi
        got=$(grep -E "^$name=" "$cfg" | cut -d= -f2- || true)
        [ -n "$got" ] || got=n
        if [ "$got" != "$want" ]; then
            say "config: $name=$want requested, olddefconfig gave $got"
            bad=1
        fi
    done <"$fragment"
    return "$bad"
}

main() {
    [ -f "$fragment" ] || die "no $fragment"
    ensure_packages
    local key
    key=$(compute_key)
    if [ "${1:-}" = --key ]; then
        echo "$key"
        return
    fi
    local out=$cache/$key
    mkdir -p "$cache"
    if [ -f "$out/vmlinux" ]; then
        set_current "$key"
        echo "$out/vmlinux"
        return
    fi

    # One build at a time per cache; a waiter finds the winner's result.
    exec 9>"$cache/.lock"
    flock 9
    if [ -f "$out/vmlinux" ]; then
        set_current "$key"
        echo "$out/vmlinux"
        return
    fi

    local scratch src log t0
    scratch=$(mktemp -d "$cache/.build-$key.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the path is fixed
    trap "rm -rf '$scratch'" EXIT
    src=$scratch/src
    log=$scratch/build.log
    t0=$(date +%s)
    say "building $key in $scratch (log: $log)"
    mkdir -p "$src"
    tar -xf "$src_tar" -C "$src" --strip-components=1
    cp "$fragment" "$src/arch/x86/configs/sbx.config"

    local -a mk=(make -C "$src" ARCH=x86_64 LOCALVERSION=-sbx
        KBUILD_BUILD_USER=sbx KBUILD_BUILD_HOST=sbx
        KBUILD_BUILD_TIMESTAMP="$(dpkg-query -W -f '${Version}' "$src_pkg")")
    if ! { "${mk[@]}" tinyconfig sbx.config &&
        "${mk[@]}" -j"${SBX_KERNEL_JOBS:-$(nproc)}" vmlinux bzImage; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "build failed (log above)"
    fi
    check_config "$src/.config" || die "the fragment does not hold in the built .config"

    local stage=$scratch/out
    mkdir -p "$stage"
    cp "$src/vmlinux" "$stage/vmlinux"
    cp "$src/arch/x86/boot/bzImage" "$stage/bzImage"
    cp "$src/.config" "$stage/config"
    "${mk[@]}" -s kernelrelease >"$stage/version"
    mv -T "$stage" "$out"
    set_current "$key"
    say "built $(cat "$out/version") in $(($(date +%s) - t0)) s"
    echo "$out/vmlinux"
}

main "$@"
