//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`), resolved for x86_64
//! and for Docker's default capability set, as data for `super::compile`.

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the sbx seccomp profile is resolved for x86_64 only");

/// `(name, number)` pairs from `libc::SYS_*` names.
macro_rules! syscalls {
    ($($sys:ident),* $(,)?) => {
        &[$((stringify!($sys), libc::$sys)),*]
    };
}

/// `io_pgetevents`: x86_64 number 333 (`arch/x86/entry/syscalls/syscall_64.tbl`); the `libc`
/// crate has no `SYS_io_pgetevents` for x86_64.
const SYS_IO_PGETEVENTS: i64 = 333;

/// One comparison on one syscall argument.
#[derive(Debug, Clone, Copy)]
pub(super) struct ArgCmp {
    /// Argument index, 0-based.
    pub index: u8,
    /// Compare only the low 32 bits (the kernel reads the argument as an `int`).
    pub low32: bool,
    pub op: CmpOp,
}

/// The comparisons the profile needs (libseccomp's `SCMP_CMP_*` subset).
#[derive(Debug, Clone, Copy)]
pub(super) enum CmpOp {
    /// `arg == value`.
    Eq(u64),
    /// `arg != value`.
    Ne(u64),
    /// `arg & mask == value`.
    MaskedEq { mask: u64, value: u64 },
}

/// A syscall allowed only when one of `any_of` holds (moby lists one rule per alternative).
#[derive(Debug, Clone, Copy)]
pub(super) struct Conditional {
    pub name: &'static str,
    pub nr: i64,
    pub any_of: &'static [ArgCmp],
}

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET` = 0x7E020000 (moby's `2114060288`).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `AF_VSOCK` (`include/linux/socket.h`).
const AF_VSOCK: u64 = 40;

const fn arg0_eq(value: u64) -> ArgCmp {
    ArgCmp {
        index: 0,
        low32: false,
        op: CmpOp::Eq(value),
    }
}

/// moby's unconditional `SCMP_ACT_ALLOW` list, minus the names x86_64 does not have
/// (`*32`, `*64` and `*_time64` variants, `_llseek`, `_newselect`, `ipc`, `socketcall`, `send`,
/// `recv`, `sigreturn`, `sigprocmask`, `waitpid`, `ugetrlimit`, `mmap2`), plus the x86_64
/// `includes.arches` rules (`arch_prctl`, `modify_ldt`) and the `minKernel: 4.8` rule
/// (`ptrace`, `process_vm_readv`, `process_vm_writev`), plus `chroot` (`CAP_SYS_CHROOT` is in
/// the default capability set).
#[rustfmt::skip]
pub(super) const ALLOW: &[(&str, i64)] = syscalls![
    SYS_accept, SYS_accept4, SYS_access, SYS_adjtimex, SYS_alarm, SYS_bind, SYS_brk,
    SYS_capget, SYS_capset, SYS_chdir, SYS_chmod, SYS_chown, SYS_clock_adjtime,
    SYS_clock_getres, SYS_clock_gettime, SYS_clock_nanosleep, SYS_close, SYS_close_range,
    SYS_connect, SYS_copy_file_range, SYS_creat, SYS_dup, SYS_dup2, SYS_dup3,
    SYS_epoll_create, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_ctl_old, SYS_epoll_pwait,
    SYS_epoll_pwait2, SYS_epoll_wait, SYS_epoll_wait_old, SYS_eventfd, SYS_eventfd2,
    SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group, SYS_faccessat, SYS_faccessat2,
    SYS_fadvise64, SYS_fallocate, SYS_fanotify_mark, SYS_fchdir, SYS_fchmod, SYS_fchmodat,
    SYS_fchown, SYS_fchownat, SYS_fcntl, SYS_fdatasync, SYS_fgetxattr, SYS_flistxattr,
    SYS_flock, SYS_fork, SYS_fremovexattr, SYS_fsetxattr, SYS_fstat, SYS_fstatfs, SYS_fsync,
    SYS_ftruncate, SYS_futex, SYS_futex_waitv, SYS_futimesat, SYS_getcpu, SYS_getcwd,
    SYS_getdents, SYS_getdents64, SYS_getegid, SYS_geteuid, SYS_getgid, SYS_getgroups,
    SYS_getitimer, SYS_getpeername, SYS_getpgid, SYS_getpgrp, SYS_getpid, SYS_getppid,
    SYS_getpriority, SYS_getrandom, SYS_getresgid, SYS_getresuid, SYS_getrlimit,
    SYS_get_robust_list, SYS_getrusage, SYS_getsid, SYS_getsockname, SYS_getsockopt,
    SYS_get_thread_area, SYS_gettid, SYS_gettimeofday, SYS_getuid, SYS_getxattr,
    SYS_inotify_add_watch, SYS_inotify_init, SYS_inotify_init1, SYS_inotify_rm_watch,
    SYS_io_cancel, SYS_ioctl, SYS_io_destroy, SYS_io_getevents, SYS_ioprio_get,
    SYS_ioprio_set, SYS_io_setup, SYS_io_submit, SYS_io_uring_enter, SYS_io_uring_register,
    SYS_io_uring_setup, SYS_kill, SYS_landlock_add_rule, SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self, SYS_lchown, SYS_lgetxattr, SYS_link, SYS_linkat, SYS_listen,
    SYS_listxattr, SYS_llistxattr, SYS_lremovexattr, SYS_lseek, SYS_lsetxattr, SYS_lstat,
    SYS_madvise, SYS_membarrier, SYS_memfd_create, SYS_memfd_secret, SYS_mincore, SYS_mkdir,
    SYS_mkdirat, SYS_mknod, SYS_mknodat, SYS_mlock, SYS_mlock2, SYS_mlockall, SYS_mmap,
    SYS_mprotect, SYS_mq_getsetattr, SYS_mq_notify, SYS_mq_open, SYS_mq_timedreceive,
    SYS_mq_timedsend, SYS_mq_unlink, SYS_mremap, SYS_msgctl, SYS_msgget, SYS_msgrcv,
    SYS_msgsnd, SYS_msync, SYS_munlock, SYS_munlockall, SYS_munmap, SYS_name_to_handle_at,
    SYS_nanosleep, SYS_newfstatat, SYS_open, SYS_openat, SYS_openat2, SYS_pause,
    SYS_pidfd_open, SYS_pidfd_send_signal, SYS_pipe, SYS_pipe2, SYS_pkey_alloc, SYS_pkey_free,
    SYS_pkey_mprotect, SYS_poll, SYS_ppoll, SYS_prctl, SYS_pread64, SYS_preadv, SYS_preadv2,
    SYS_prlimit64, SYS_process_mrelease, SYS_pselect6, SYS_pwrite64, SYS_pwritev,
    SYS_pwritev2, SYS_read, SYS_readahead, SYS_readlink, SYS_readlinkat, SYS_readv,
    SYS_recvfrom, SYS_recvmmsg, SYS_recvmsg, SYS_remap_file_pages, SYS_removexattr,
    SYS_rename, SYS_renameat, SYS_renameat2, SYS_restart_syscall, SYS_rmdir, SYS_rseq,
    SYS_rt_sigaction, SYS_rt_sigpending, SYS_rt_sigprocmask, SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn, SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo,
    SYS_sched_getaffinity, SYS_sched_getattr, SYS_sched_getparam, SYS_sched_get_priority_max,
    SYS_sched_get_priority_min, SYS_sched_getscheduler, SYS_sched_rr_get_interval,
    SYS_sched_setaffinity, SYS_sched_setattr, SYS_sched_setparam, SYS_sched_setscheduler,
    SYS_sched_yield, SYS_seccomp, SYS_select, SYS_semctl, SYS_semget, SYS_semop,
    SYS_semtimedop, SYS_sendfile, SYS_sendmmsg, SYS_sendmsg, SYS_sendto, SYS_setfsgid,
    SYS_setfsuid, SYS_setgid, SYS_setgroups, SYS_setitimer, SYS_setpgid, SYS_setpriority,
    SYS_setregid, SYS_setresgid, SYS_setresuid, SYS_setreuid, SYS_setrlimit,
    SYS_set_robust_list, SYS_setsid, SYS_setsockopt, SYS_set_thread_area, SYS_set_tid_address,
    SYS_setuid, SYS_setxattr, SYS_shmat, SYS_shmctl, SYS_shmdt, SYS_shmget, SYS_shutdown,
    SYS_sigaltstack, SYS_signalfd, SYS_signalfd4, SYS_socketpair, SYS_splice, SYS_stat,
    SYS_statfs, SYS_statx, SYS_symlink, SYS_symlinkat, SYS_sync, SYS_sync_file_range,
    SYS_syncfs, SYS_sysinfo, SYS_tee, SYS_tgkill, SYS_time, SYS_timer_create,
    SYS_timer_delete, SYS_timer_getoverrun, SYS_timer_gettime, SYS_timer_settime,
    SYS_timerfd_create, SYS_timerfd_gettime, SYS_timerfd_settime, SYS_times, SYS_tkill,
    SYS_truncate, SYS_umask, SYS_uname, SYS_unlink, SYS_unlinkat, SYS_utime, SYS_utimensat,
    SYS_utimes, SYS_vfork, SYS_vmsplice, SYS_wait4, SYS_waitid, SYS_write, SYS_writev,
    // includes.arches = [amd64, x32]
    SYS_arch_prctl, SYS_modify_ldt,
    // includes.minKernel = 4.8
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev,
    // includes.caps = [CAP_SYS_CHROOT]
    SYS_chroot,
];

/// Allowed syscalls whose number `libc` lacks on x86_64.
pub(super) const ALLOW_EXTRA: &[(&str, i64)] = &[("io_pgetevents", SYS_IO_PGETEVENTS)];

/// Syscalls allowed only for some argument values.
pub(super) const CONDITIONAL: &[Conditional] = &[
    // Everything but AF_VSOCK. moby compares all 64 bits; the kernel takes `int family`, so
    // only the low 32 bits are compared here (0x1_0000_0028 must not slip through).
    Conditional {
        name: "socket",
        nr: libc::SYS_socket,
        any_of: &[ArgCmp {
            index: 0,
            low32: true,
            op: CmpOp::Ne(AF_VSOCK),
        }],
    },
    // PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (query).
    Conditional {
        name: "personality",
        nr: libc::SYS_personality,
        any_of: &[
            arg0_eq(0x0),
            arg0_eq(0x8),
            arg0_eq(0x2_0000),
            arg0_eq(0x2_0008),
            arg0_eq(0xffff_ffff),
        ],
    },
    // Without CAP_SYS_ADMIN: clone only without namespace flags (x86_64 order: flags first).
    Conditional {
        name: "clone",
        nr: libc::SYS_clone,
        any_of: &[ArgCmp {
            index: 0,
            low32: false,
            op: CmpOp::MaskedEq {
                mask: CLONE_NAMESPACE_FLAGS,
                value: 0,
            },
        }],
    },
];

/// Syscalls answered with ENOSYS instead of the default EPERM: without CAP_SYS_ADMIN moby
/// returns ENOSYS for `clone3` (its flags live in memory, out of seccomp's reach) so that
/// glibc falls back to `clone`, whose flags the rule above checks.
pub(super) const ENOSYS: &[(&str, i64)] = &[("clone3", libc::SYS_clone3)];
