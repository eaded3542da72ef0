//! Guests the benches boot without sbx: a minimal initramfs for the
//! `qemu -M microvm` peer (same kernel and command line as sbx's VMs, but an
//! init that only says so and then reboots or waits), and the kvm engine's
//! freestanding test payloads (vmm/payloads), assembled with binutils;
//! pvh.S also boots under QEMU (Xen PVH note).

use std::path::{Path, PathBuf};
use std::process::Command;

use sbx_vmm::initramfs::Cpio;

/// What the minimal init writes on the console once it runs.
pub const INIT_MARKER: &str = "sbx-bench-init";

/// What vmm/payloads/pvh.S prints on either entry (the kvm engine's 64-bit
/// one, the PVH 32-bit one QEMU uses).
pub const PVH_LINE: &str = "hello from an sbx pvh guest";

/// Where the statically linked init's single PT_LOAD segment goes.
const BASE: u64 = 0x40_0000;
/// ELF64 header and one program header (System V gABI, x86-64 psABI).
const EHDR: usize = 64;
const PHDR: usize = 56;

/// What the init does after writing [`INIT_MARKER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitThen {
    /// reboot(2) with RESTART: with `reboot=t` and QEMU's `-no-reboot`, the
    /// VM ends (the guest's poweroff only halts without ACPI).
    Reboot,
    /// pause(2) for ever: an idle guest, for footprints.
    Pause,
}

/// A static x86-64 executable of a few instructions: write(1, marker),
/// then reboot or pause. No libc, no toolchain needed.
pub fn tiny_init(then: InitThen) -> Vec<u8> {
    let msg = format!("{INIT_MARKER}\n");
    let mut code: Vec<u8> = Vec::new();
    // mov eax, 1 (write); mov edi, 1 (stdout: the console)
    code.extend([0xb8, 1, 0, 0, 0, 0xbf, 1, 0, 0, 0]);
    // lea rsi, [rip + msg]: patched below
    code.extend([0x48, 0x8d, 0x35, 0, 0, 0, 0]);
    let lea_end = code.len();
    // mov edx, len; syscall
    code.push(0xba);
    code.extend((msg.len() as u32).to_le_bytes());
    code.extend([0x0f, 0x05]);
    match then {
        InitThen::Reboot => {
            // mov eax, 169 (reboot); edi, esi: LINUX_REBOOT_MAGIC1/2;
            // edx: LINUX_REBOOT_CMD_RESTART; syscall; then spin.
            code.extend([0xb8, 169, 0, 0, 0]);
            code.push(0xbf);
            code.extend(0xfee1_deadu32.to_le_bytes());
            code.push(0xbe);
            code.extend(0x2812_1969u32.to_le_bytes());
            code.push(0xba);
            code.extend(0x0123_4567u32.to_le_bytes());
            code.extend([0x0f, 0x05, 0xeb, 0xfe]);
        }
        InitThen::Pause => {
            // loop: mov eax, 34 (pause); syscall; jmp loop
            code.extend([0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7]);
        }
    }
    let rel = (code.len() - lea_end) as u32;
    code[lea_end - 4..lea_end].copy_from_slice(&rel.to_le_bytes());
    code.extend(msg.as_bytes());

    let total = (EHDR + PHDR + code.len()) as u64;
    let mut elf = Vec::with_capacity(total as usize);
    elf.extend(b"\x7fELF");
    elf.extend([2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V
    elf.extend([0u8; 8]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend(1u32.to_le_bytes());
    elf.extend((BASE + (EHDR + PHDR) as u64).to_le_bytes()); // e_entry
    elf.extend((EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend(0u64.to_le_bytes()); // e_shoff
    elf.extend(0u32.to_le_bytes()); // e_flags
    elf.extend((EHDR as u16).to_le_bytes());
    elf.extend((PHDR as u16).to_le_bytes());
    elf.extend(1u16.to_le_bytes()); // e_phnum
    elf.extend([0u8; 6]); // no section headers
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // R + X
    elf.extend(0u64.to_le_bytes()); // p_offset
    elf.extend(BASE.to_le_bytes()); // p_vaddr
    elf.extend(BASE.to_le_bytes()); // p_paddr
    elf.extend(total.to_le_bytes()); // p_filesz
    elf.extend(total.to_le_bytes()); // p_memsz
    elf.extend(0x1000u64.to_le_bytes()); // p_align
    elf.extend(code);
    elf
}

/// An initramfs holding only `/dev/console` and the tiny init.
pub fn tiny_initramfs(dir: &Path, then: InitThen) -> std::io::Result<PathBuf> {
    let mut c = Cpio::new();
    c.dir("dev", 0o755)
        .char_dev("dev/console", 0o600, 5, 1)
        .file("init", 0o755, &tiny_init(then));
    let path = dir.join(format!("tiny-init-{then:?}.cpio").to_lowercase());
    std::fs::write(&path, c.finish())?;
    Ok(path)
}

/// Assembles and links test guest `name` (vmm/payloads/NAME.S) into `out`.
pub fn payload(name: &str, out: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("vmm/payloads");
    let obj = out.join(format!("{name}.o"));
    let elf = out.join(format!("{name}.elf"));
    let mut assemble = Command::new("as");
    assemble
        .args(["--64", "-I"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .arg(src.join(format!("{name}.S")));
    super::try_run(&mut assemble).map_err(|e| format!("assembling {name}.S (binutils): {e}"))?;
    let mut link = Command::new("ld");
    link.args([
        "-m",
        "elf_x86_64",
        "--no-warn-rwx-segments",
        "-nostdlib",
        "-T",
    ])
    .arg(src.join("payload.ld"))
    .arg("-o")
    .arg(&elf)
    .arg(&obj);
    super::try_run(&mut link).map_err(|e| format!("linking {name}: {e}"))?;
    Ok(elf)
}
