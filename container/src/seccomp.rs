//! Docker's default seccomp profile for x86_64, compiled once to classic BPF, cached on disk,
//! and installed in the container child right before `execve`.
//!
//! Where the profile comes from: moby `profiles/seccomp/default.json` (the v24-era profile:
//! default action `SCMP_ACT_ERRNO` with `defaultErrnoRet: 1`), resolved the way moby resolves
//! it for a container with Docker's default capability set (CHOWN, DAC_OVERRIDE, FSETID,
//! FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL,
//! AUDIT_WRITE) on a kernel >= 4.8. The resolved table is in `seccomp/profile.rs`.
//!
//! How it differs from moby:
//! - x86_64 only. Names x86_64 does not have (`chown32`, `*_time64`, `socketcall`, ...) are
//!   left out. moby also admits the i386 and x32 ABIs (`archMap` sub-architectures); here any
//!   other audit arch is killed (`SECCOMP_RET_KILL_PROCESS`), and x32 numbers (bit 30 set)
//!   match no rule, so they get the default EPERM.
//! - `socket`'s "not AF_VSOCK" test compares the low 32 bits only (the kernel reads `int
//!   family`); moby's 64-bit compare lets `0x1_0000_0028` through.
//! - Rules that need a capability outside the default set (`CAP_SYS_ADMIN`, `CAP_SYS_BOOT`,
//!   `CAP_SYS_MODULE`, `CAP_SYS_PTRACE`, `CAP_DAC_READ_SEARCH`, ...) are resolved away, so
//!   `mount`, `umount2`, `unshare`, `setns`, `reboot`, `*_module`, `kexec_load`, `bpf`,
//!   `perf_event_open`, `open_by_handle_at`, `pivot_root`, `swapon`, `keyctl`, `add_key`,
//!   `request_key`, ... fall to the default EPERM, and `clone3` gets ENOSYS.
//!
//! The allowlist is compiled with `seccompiler` (one match action, ALLOW, one default, EPERM);
//! the ENOSYS answers are a short prefix written here, since `seccompiler` has one match
//! action per filter. Syscall numbers are `libc::SYS_*`.

mod profile;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use seccompiler::{
    BackendError, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use sha2::{Digest, Sha256};

pub use seccompiler::sock_filter;

use profile::{ArgCmp, CmpOp};

/// A compiled filter: the `struct sock_filter` array the kernel takes.
pub type BpfProgram = seccompiler::BpfProgram;

/// Bumped whenever the compiler or the cache format changes, so old cache files are not used.
const CACHE_VERSION: &str = "sbx-seccomp/1 seccompiler/0.4 x86_64";

/// `BPF_MAXINSNS` (`include/uapi/linux/bpf_common.h`): the kernel's limit per filter.
const BPF_MAXINSNS: usize = 4096;
/// `sizeof(struct sock_filter)`.
const INSN_SIZE: usize = 8;
/// `AUDIT_ARCH_X86_64` = `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`
/// (`include/uapi/linux/audit.h`).
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// Offsets in `struct seccomp_data` (`include/uapi/linux/seccomp.h`).
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
const SECCOMP_DATA_SIZE: u32 = 64;

// Classic BPF opcodes (`include/uapi/linux/bpf_common.h`), as `sock_filter::code` is u16.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JMP_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JMP_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JMP_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// `install` hands seccompiler's `sock_filter` to the kernel as `libc::sock_filter`.
const _: () = assert!(
    std::mem::size_of::<sock_filter>() == std::mem::size_of::<libc::sock_filter>()
        && std::mem::align_of::<sock_filter>() == std::mem::align_of::<libc::sock_filter>()
        && std::mem::size_of::<sock_filter>() == INSN_SIZE
);

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp rule for {syscall}: {source}")]
    Rule {
        syscall: &'static str,
        source: BackendError,
    },
    #[error("syscall {syscall} ({nr}) is listed twice in the seccomp profile")]
    DuplicateSyscall { syscall: &'static str, nr: i64 },
    #[error("compile seccomp filter: {0}")]
    Compile(#[source] BackendError),
    #[error("seccomp filter of {0} instructions; the kernel takes 1 to 4096")]
    Length(usize),
    #[error("create seccomp cache dir {path}: {source}")]
    CacheDir { path: PathBuf, source: io::Error },
    #[error("read seccomp cache {path}: {source}")]
    CacheRead { path: PathBuf, source: io::Error },
    #[error("write seccomp cache {path}: {source}")]
    CacheWrite { path: PathBuf, source: io::Error },
    #[error("rename seccomp cache {from} to {to}: {source}")]
    CacheRename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("seccomp(SECCOMP_SET_MODE_FILTER): {0}")]
    Install(#[source] io::Error),
}

/// The default profile's program: read from `cache_dir/seccomp-<key>.bpf` when that file is a
/// well-formed program, else compiled and written there atomically (temp file + rename).
/// `<key>` is the sha256 of [`CACHE_VERSION`] and the profile's canonical form, so a changed
/// profile never reads an old file.
pub fn filter(cache_dir: &Path) -> Result<BpfProgram, SeccompError> {
    let path = cache_dir.join(format!("seccomp-{}.bpf", cache_key()));
    if let Some(prog) = read_cache(&path)? {
        return Ok(prog);
    }
    let prog = compile()?;
    write_cache(cache_dir, &path, &prog)?;
    Ok(prog)
}

/// Installs `prog` on the calling thread with `seccomp(SECCOMP_SET_MODE_FILTER)`. Needs
/// no_new_privs set (or CAP_SYS_ADMIN); does not allocate, so it is safe between `fork` and
/// `execve`.
pub fn install(prog: &[sock_filter]) -> Result<(), SeccompError> {
    if prog.is_empty() || prog.len() > BPF_MAXINSNS {
        return Err(SeccompError::Length(prog.len()));
    }
    let fprog = libc::sock_fprog {
        // Fits: checked against BPF_MAXINSNS above.
        len: prog.len() as u16,
        filter: prog.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `fprog` points at `prog.len()` instructions that live across the call;
    // seccompiler's `sock_filter` has libc's layout (asserted at compile time); the kernel
    // copies the program in and writes nothing through the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Install(io::Error::last_os_error()));
    }
    Ok(())
}

/// Compiles the default profile, without the cache.
pub fn compile() -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut add = |syscall: &'static str, nr: i64, chain: Vec<SeccompRule>| {
        if rules.insert(nr, chain).is_some() {
            return Err(SeccompError::DuplicateSyscall { syscall, nr });
        }
        Ok(())
    };
    for &(name, nr) in profile::ALLOW.iter().chain(profile::ALLOW_EXTRA) {
        add(name, nr, Vec::new())?;
    }
    for c in profile::CONDITIONAL {
        let chain = c
            .any_of
            .iter()
            .map(|cmp| {
                rule(cmp).map_err(|source| SeccompError::Rule {
                    syscall: c.name,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        add(c.name, c.nr, chain)?;
    }
    for &(name, nr) in profile::ENOSYS {
        if rules.contains_key(&nr) {
            return Err(SeccompError::DuplicateSyscall { syscall: name, nr });
        }
    }
    let allowlist = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Compile)?;
    let body: BpfProgram = allowlist.try_into().map_err(SeccompError::Compile)?;

    let mut prog = prefix();
    prog.extend(body);
    if prog.len() > BPF_MAXINSNS {
        return Err(SeccompError::Length(prog.len()));
    }
    Ok(prog)
}

/// One moby argument rule as a seccompiler rule.
fn rule(cmp: &ArgCmp) -> Result<SeccompRule, BackendError> {
    let len = if cmp.low32 {
        SeccompCmpArgLen::Dword
    } else {
        SeccompCmpArgLen::Qword
    };
    let (op, value) = match cmp.op {
        CmpOp::Eq(v) => (SeccompCmpOp::Eq, v),
        CmpOp::Ne(v) => (SeccompCmpOp::Ne, v),
        CmpOp::MaskedEq { mask, value } => (SeccompCmpOp::MaskedEq(mask), value),
    };
    SeccompRule::new(vec![SeccompCondition::new(cmp.index, len, op, value)?])
}

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Arch check, then the syscalls answered with ENOSYS; the seccompiler program follows.
fn prefix() -> BpfProgram {
    let mut p = vec![
        stmt(LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, SECCOMP_DATA_NR),
    ];
    for &(_, nr) in profile::ENOSYS {
        p.push(jump(JMP_JEQ_K, nr as u32, 0, 1));
        p.push(stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    }
    p
}

/// The profile as text, one line per decision, for the cache key.
fn canonical_profile() -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "arch {AUDIT_ARCH_X86_64:#x} else kill_process");
    let _ = writeln!(s, "default errno {}", libc::EPERM);
    for (name, nr) in profile::ENOSYS {
        let _ = writeln!(s, "errno {} {nr} {name}", libc::ENOSYS);
    }
    let mut allow: Vec<_> = profile::ALLOW.iter().chain(profile::ALLOW_EXTRA).collect();
    allow.sort_by_key(|&&(_, nr)| nr);
    for (name, nr) in allow {
        let _ = writeln!(s, "allow {nr} {name}");
    }
    for c in profile::CONDITIONAL {
        let _ = writeln!(s, "allow {} {} if any {:?}", c.nr, c.name, c.any_of);
    }
    s
}

fn cache_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut h = Sha256::new();
        h.update(CACHE_VERSION.as_bytes());
        h.update(b"\n");
        h.update(canonical_profile().as_bytes());
        hex::encode(h.finalize())
    })
}

/// The cached program, or `None` when the file is missing or not a well-formed program.
fn read_cache(path: &Path) -> Result<Option<BpfProgram>, SeccompError> {
    let err = |source| SeccompError::CacheRead {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let max = (BPF_MAXINSNS * INSN_SIZE) as u64;
    let mut bytes = Vec::with_capacity(BPF_MAXINSNS * INSN_SIZE / 2);
    // One byte past the limit tells a too-long file apart.
    file.take(max + 1).read_to_end(&mut bytes).map_err(err)?;
    Ok(decode(&bytes).filter(|p| well_formed(p)))
}

fn write_cache(dir: &Path, path: &Path, prog: &[sock_filter]) -> Result<(), SeccompError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir).map_err(|source| SeccompError::CacheDir {
        path: dir.to_owned(),
        source,
    })?;
    let tmp = dir.join(format!(
        ".seccomp-{}.{}.{}.tmp",
        cache_key(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&encode(prog)));
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(SeccompError::CacheWrite { path: tmp, source });
    }
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        SeccompError::CacheRename {
            from: tmp.clone(),
            to: path.to_owned(),
            source,
        }
    })
}

/// `struct sock_filter` in memory order: u16 code, u8 jt, u8 jf, u32 k, native endian.
fn encode(prog: &[sock_filter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prog.len() * INSN_SIZE);
    for i in prog {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.extend_from_slice(&[i.jt, i.jf]);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Option<BpfProgram> {
    if bytes.is_empty()
        || !bytes.len().is_multiple_of(INSN_SIZE)
        || bytes.len() > BPF_MAXINSNS * INSN_SIZE
    {
        return None;
    }
    let prog = bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    Some(prog)
}

/// A program as `compile` makes them: our prefix, only the opcodes the compilers emit, loads
/// inside `struct seccomp_data`, every jump inside the program, a return at the end. A
/// truncated or scribbled cache file fails this and is recompiled.
fn well_formed(prog: &[sock_filter]) -> bool {
    let n = prog.len();
    if n == 0 || n > BPF_MAXINSNS || !prog.starts_with(&prefix()) {
        return false;
    }
    let inside = |pc: usize, off: u32| pc + 1 + (off as usize) < n;
    let ok = prog.iter().enumerate().all(|(pc, i)| match i.code {
        LD_W_ABS => i.k % 4 == 0 && i.k < SECCOMP_DATA_SIZE,
        ALU_AND_K | RET_K => true,
        JMP_JA => inside(pc, i.k),
        JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K => {
            inside(pc, i.jt.into()) && inside(pc, i.jf.into())
        }
        _ => false,
    });
    ok && prog[n - 1].code == RET_K
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    /// Runs `prog` on a `struct seccomp_data` the way the kernel's classic BPF interpreter does.
    fn run(prog: &[sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; SECCOMP_DATA_SIZE as usize];
        data[0..4].copy_from_slice(&(nr as u32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            pc += 1;
            let cond = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
            match i.code {
                LD_W_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                ALU_AND_K => acc &= i.k,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K => pc += cond(acc == i.k),
                JMP_JGT_K => pc += cond(acc > i.k),
                JMP_JGE_K => pc += cond(acc >= i.k),
                JMP_JSET_K => pc += cond(acc & i.k != 0),
                RET_K => return i.k,
                code => panic!("opcode {code:#x} at {}", pc - 1),
            }
        }
    }

    fn verdict(prog: &[sock_filter], nr: i64, args: [u64; 6]) -> u32 {
        run(prog, AUDIT_ARCH_X86_64, nr, args)
    }

    fn arg0(a: u64) -> [u64; 6] {
        [a, 0, 0, 0, 0, 0]
    }

    #[test]
    fn compiles_within_kernel_limit() {
        let prog = compile().unwrap();
        assert!(!prog.is_empty());
        assert!(prog.len() <= BPF_MAXINSNS, "{} instructions", prog.len());
        assert!(well_formed(&prog));
        assert_eq!(decode(&encode(&prog)).unwrap(), prog);
    }

    #[test]
    fn every_syscall_number_gets_the_profile_verdict() {
        let prog = compile().unwrap();
        let allowed: Vec<i64> = (profile::ALLOW.iter().chain(profile::ALLOW_EXTRA))
            .map(|&(_, nr)| nr)
            .chain(profile::CONDITIONAL.iter().map(|c| c.nr))
            .collect();
        for nr in 0..1024 {
            let want = if nr == libc::SYS_clone3 {
                ENOSYS
            } else if allowed.contains(&nr) {
                ALLOW
            } else {
                EPERM
            };
            assert_eq!(verdict(&prog, nr, [0; 6]), want, "syscall {nr}");
        }
        // x32 numbers and other architectures.
        assert_eq!(verdict(&prog, 0x4000_0000 | libc::SYS_read, [0; 6]), EPERM);
        assert_eq!(
            verdict(&prog, 0x4000_0000 | libc::SYS_clone3, [0; 6]),
            EPERM
        );
        const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
        assert_eq!(run(&prog, AUDIT_ARCH_I386, 1, [0; 6]), KILL);
    }

    #[test]
    fn privileged_syscalls_are_denied() {
        let prog = compile().unwrap();
        let denied = [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_reboot,
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_pivot_root,
            libc::SYS_open_by_handle_at,
            libc::SYS_iopl,
            libc::SYS_ioperm,
            libc::SYS_settimeofday,
            libc::SYS_clock_settime,
            libc::SYS_acct,
            libc::SYS_syslog,
            libc::SYS_sethostname,
            libc::SYS_setdomainname,
            libc::SYS_userfaultfd,
            libc::SYS_kcmp,
            libc::SYS_pidfd_getfd,
            libc::SYS_fsopen,
            libc::SYS_fsmount,
            libc::SYS_open_tree,
            libc::SYS_move_mount,
            libc::SYS_quotactl,
            libc::SYS_vhangup,
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
            libc::SYS_fanotify_init,
            libc::SYS_lookup_dcookie,
            libc::SYS_uselib,
            libc::SYS_ustat,
            libc::SYS_sysfs,
        ];
        for nr in denied {
            assert_eq!(verdict(&prog, nr, [0; 6]), EPERM, "syscall {nr}");
        }
        for nr in [
            libc::SYS_ptrace,
            libc::SYS_chroot,
            libc::SYS_arch_prctl,
            libc::SYS_getpid,
        ] {
            assert_eq!(verdict(&prog, nr, [0; 6]), ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn argument_rules() {
        let prog = compile().unwrap();
        let socket = |family| verdict(&prog, libc::SYS_socket, arg0(family));
        assert_eq!(socket(libc::AF_UNIX as u64), ALLOW);
        assert_eq!(socket(libc::AF_INET6 as u64), ALLOW);
        assert_eq!(socket(libc::AF_VSOCK as u64), EPERM);
        assert_eq!(socket((1 << 32) | libc::AF_VSOCK as u64), EPERM);

        let personality = |p| verdict(&prog, libc::SYS_personality, arg0(p));
        for p in [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
            assert_eq!(personality(p), ALLOW, "personality {p:#x}");
        }
        for p in [libc::ADDR_NO_RANDOMIZE as u64, 0x1, 0x1_0000_0000, u64::MAX] {
            assert_eq!(personality(p), EPERM, "personality {p:#x}");
        }

        let clone = |flags| verdict(&prog, libc::SYS_clone, arg0(flags));
        let thread = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID;
        assert_eq!(clone(libc::SIGCHLD as u64), ALLOW);
        assert_eq!(clone(thread as u64), ALLOW);
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(
                clone((ns | libc::SIGCHLD) as u64),
                EPERM,
                "clone flag {ns:#x}"
            );
        }
        assert_eq!(verdict(&prog, libc::SYS_clone3, [0; 6]), ENOSYS);
    }

    #[test]
    fn cache_miss_writes_and_hit_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let first = filter(&cache).unwrap();
        assert_eq!(first, compile().unwrap());
        let path = cache.join(format!("seccomp-{}.bpf", cache_key()));
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes, encode(&first));
        let entries: Vec<_> = fs::read_dir(&cache).unwrap().collect();
        assert_eq!(entries.len(), 1, "temp file left behind");

        let inode = fs::metadata(&path).unwrap().ino();
        let second = filter(&cache).unwrap();
        assert_eq!(second, first);
        assert_eq!(
            fs::metadata(&path).unwrap().ino(),
            inode,
            "hit rewrote the file"
        );
    }

    #[test]
    fn corrupt_cache_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let good = encode(&compile().unwrap());
        let path = dir.path().join(format!("seccomp-{}.bpf", cache_key()));
        let mut scribbled = good.clone();
        scribbled[INSN_SIZE * 2 + 4] ^= 0xff; // the KILL_PROCESS return of the arch check
        let corrupt: [(&str, Vec<u8>); 7] = [
            ("empty", Vec::new()),
            ("odd length", good[..good.len() - 3].to_vec()),
            (
                "one instruction short",
                good[..good.len() - INSN_SIZE].to_vec(),
            ),
            (
                "half",
                good[..good.len() / 2 / INSN_SIZE * INSN_SIZE].to_vec(),
            ),
            ("garbage", vec![0xff; 64]),
            (
                "too long",
                [good.as_slice(), &vec![0; BPF_MAXINSNS * INSN_SIZE]].concat(),
            ),
            ("scribbled", scribbled),
        ];
        for (what, bytes) in corrupt {
            fs::write(&path, &bytes).unwrap();
            let prog = filter(dir.path()).unwrap();
            assert_eq!(encode(&prog), good, "{what}");
            assert_eq!(fs::read(&path).unwrap(), good, "{what}: not rewritten");
        }
    }

    /// Errno of the last failed call, read without allocating.
    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// `syscall` returned -1 with `want` in errno.
    fn fails_with(rc: libc::c_long, want: i32) -> bool {
        rc == -1 && errno() == want
    }

    /// Whether /proc/self/status says `Seccomp:\t2`, with raw syscalls and a stack buffer.
    fn seccomp_mode_is_filter() -> bool {
        let mut buf = [0u8; 4096];
        // SAFETY: a NUL-terminated path; the returned fd is closed below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/proc/self/status".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return false;
        }
        let mut len = 0;
        while len < buf.len() {
            let rest = &mut buf[len..];
            // SAFETY: reads into `rest`, which is valid for `rest.len()` bytes.
            let n = unsafe { libc::syscall(libc::SYS_read, fd, rest.as_mut_ptr(), rest.len()) };
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        // SAFETY: `fd` was opened above and is not used afterwards.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        let want = b"\nSeccomp:\t2\n";
        buf[..len].windows(want.len()).any(|w| w == want)
    }

    /// Names of the checks in `enforce`, by exit code - 1.
    const CHECKS: &[&str] = &[
        "prctl(PR_SET_NO_NEW_PRIVS)",
        "install",
        "getpid works",
        "reboot -> EPERM",
        "clone3 -> ENOSYS",
        "unshare(CLONE_NEWNS) -> EPERM",
        "personality(0xffffffff) works",
        "personality(ADDR_NO_RANDOMIZE) -> EPERM",
        "mount -> EPERM",
        "keyctl -> EPERM",
        "socket(AF_VSOCK) -> EPERM",
        "socket(AF_UNIX) works",
        "clone(CLONE_NEWUTS) -> EPERM",
        "clone(SIGCHLD) works",
        "/proc/self/status Seccomp: 2",
    ];

    /// In the forked child: install `prog`, then try syscalls. Returns 0, or the 1-based index
    /// of the first failed check in `CHECKS`. Raw syscalls only, no allocation. Arguments are
    /// chosen so that, were the filter missing, nothing on the host changes: reboot gets no
    /// magic, mount targets a missing directory, clone children exit at once.
    fn enforce(prog: &[sock_filter]) -> i32 {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return 1;
        }
        if install(prog).is_err() {
            return 2;
        }
        // SAFETY: getpid takes no arguments.
        if unsafe { libc::syscall(libc::SYS_getpid) } <= 0 {
            return 3;
        }
        // SAFETY: integer arguments; without the magic numbers the kernel would reject it.
        let rc = unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, 0) };
        if !fails_with(rc, libc::EPERM) {
            return 4;
        }
        // SAFETY: a NULL clone_args with size 0 is rejected before anything is read.
        let rc = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
        if !fails_with(rc, libc::ENOSYS) {
            return 5;
        }
        // SAFETY: integer argument; at worst unshares this throwaway child's mount namespace.
        let rc = unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) };
        if !fails_with(rc, libc::EPERM) {
            return 6;
        }
        // SAFETY: 0xffffffff only queries the current persona.
        if unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff_u64) } < 0 {
            return 7;
        }
        // SAFETY: integer argument; at worst changes this throwaway child's persona.
        let rc = unsafe { libc::syscall(libc::SYS_personality, libc::ADDR_NO_RANDOMIZE) };
        if !fails_with(rc, libc::EPERM) {
            return 8;
        }
        let (src, dst, fstype) = (c"none", c"/nonexistent-sbx-seccomp-test", c"tmpfs");
        // SAFETY: NUL-terminated strings that outlive the call; NULL data.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount,
                src.as_ptr(),
                dst.as_ptr(),
                fstype.as_ptr(),
                0,
                0,
            )
        };
        if !fails_with(rc, libc::EPERM) {
            return 9;
        }
        // SAFETY: KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3), no create.
        let rc = unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) };
        if !fails_with(rc, libc::EPERM) {
            return 10;
        }
        // SAFETY: integer arguments.
        let rc = unsafe { libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
        if !fails_with(rc, libc::EPERM) {
            return 11;
        }
        // SAFETY: integer arguments; the new fd is closed at once.
        let fd = unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        // SAFETY: closes the fd opened just above.
        if fd < 0 || unsafe { libc::syscall(libc::SYS_close, fd) } != 0 {
            return 12;
        }
        // SAFETY: fork-like clone (no stack, no pointers); a child, if any, exits at once.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWUTS | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            )
        };
        if rc == 0 {
            // SAFETY: leaves the unexpected child without running anything else.
            unsafe { libc::_exit(0) };
        }
        if !fails_with(rc, libc::EPERM) {
            return 13;
        }
        // SAFETY: as above, a plain fork; the child exits at once.
        let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
        if pid == 0 {
            // SAFETY: leaves the child without running anything else.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer; NULL rusage.
        let waited = unsafe { libc::syscall(libc::SYS_wait4, pid, &mut status, 0, 0) };
        if pid <= 0 || waited != pid || status != 0 {
            return 14;
        }
        if !seccomp_mode_is_filter() {
            return 15;
        }
        0
    }

    #[test]
    fn installed_filter_enforces_profile() {
        let prog = compile().unwrap();
        // SAFETY: the child runs only `enforce` (raw syscalls, no allocation, no locks) and
        // leaves with `_exit`, so the harness's other threads are of no concern.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = enforce(&prog);
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is a valid out pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid: {}", io::Error::last_os_error());
        assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
        let code = libc::WEXITSTATUS(status);
        let failed = usize::try_from(code - 1).ok().and_then(|i| CHECKS.get(i));
        assert_eq!(code, 0, "check failed: {}", failed.unwrap_or(&"?"));
    }
}
