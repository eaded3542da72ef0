//! Loading the guest: the kernel (ELF vmlinux, or a bzImage), the
//! initramfs, the command line, and the Linux zero page with its e820 map.
//!
//! Boot protocol: Documentation/arch/x86/boot.rst (64-bit entry, RSI = zero
//! page). Test payloads are ELF files entered the same way.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::kvm::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIGH_MEMORY_START, MMIO_GAP_END, ZERO_PAGE_START,
};
use crate::kvm::memory;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
/// A bzImage's 64-bit entry sits 0x200 past its protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const PAGE_SIZE: u64 = 4096;

/// Boot loading failures.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("open kernel {path}: {source}")]
    OpenKernel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("load kernel {path} (neither an x86_64 ELF nor a bzImage): {source}")]
    LoadKernel {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    #[error("read initramfs {path}: {source}")]
    ReadInitramfs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory above the kernel")]
    InitramfsTooLarge { path: PathBuf, size: u64 },
    #[error("kernel command line is {len} bytes, the limit is {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line holds a NUL byte")]
    CmdlineNul,
    #[error("write {what} to guest memory: {source}")]
    Write {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },
}

/// Where the guest starts, and what the zero page says about it.
#[derive(Debug)]
pub struct LoadedKernel {
    /// 64-bit entry point (guest physical).
    pub entry: u64,
    /// First byte past the kernel image.
    pub end: u64,
    /// A bzImage's setup header, copied into the zero page.
    pub setup_header: Option<setup_header>,
}

/// The zero page as plain bytes for guest memory.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct ZeroPage(boot_params);

// SAFETY: boot_params is a bindgen-generated plain-old-data C struct: any
// byte pattern is a valid value and it has no padding-sensitive invariants.
unsafe impl vm_memory::ByteValued for ZeroPage {}

/// Loads `path` into guest memory: an ELF at its physical addresses, or a
/// bzImage at 1 MiB.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let mut file = File::open(path).map_err(|source| BootError::OpenKernel {
        path: path.to_owned(),
        source,
    })?;
    match Elf::load(mem, None, &mut file, None) {
        Ok(r) => Ok(LoadedKernel {
            entry: r.kernel_load.0,
            end: r.kernel_end,
            setup_header: None,
        }),
        Err(linux_loader::loader::Error::Elf(
            linux_loader::loader::elf::Error::InvalidElfMagicNumber,
        )) => {
            let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIGH_MEMORY_START)))
                .map_err(|source| BootError::LoadKernel {
                    path: path.to_owned(),
                    source,
                })?;
            Ok(LoadedKernel {
                entry: r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                end: r.kernel_end,
                setup_header: r.setup_header,
            })
        }
        Err(source) => Err(BootError::LoadKernel {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Loads the initramfs at the top of low memory, page aligned, above the
/// kernel. Returns (address, size).
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<(u64, u64), BootError> {
    let data = std::fs::read(path).map_err(|source| BootError::ReadInitramfs {
        path: path.to_owned(),
        source,
    })?;
    let size = data.len() as u64;
    let top = memory::low_ram_end(mem);
    let addr = top.checked_sub(size).map(|a| a & !(PAGE_SIZE - 1));
    match addr {
        Some(addr) if addr >= kernel_end.max(HIGH_MEMORY_START) => {
            mem.write_slice(&data, GuestAddress(addr))
                .map_err(|source| BootError::Write {
                    what: "initramfs",
                    source,
                })?;
            Ok((addr, size))
        }
        _ => Err(BootError::InitramfsTooLarge {
            path: path.to_owned(),
            size,
        }),
    }
}

/// Writes the NUL-terminated command line. Returns its length without NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, BootError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    if cmdline.len() + 1 > CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: CMDLINE_MAX_SIZE - 1,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|source| BootError::Write {
            what: "command line",
            source,
        })?;
    Ok(cmdline.len())
}

/// The e820 map: base memory below the EBDA, high RAM around the MMIO gap.
pub fn e820_map(mem: &GuestMemoryMmap) -> Vec<boot_e820_entry> {
    let entry = |addr, size, r#type| boot_e820_entry { addr, size, r#type };
    let mut map = vec![
        entry(0, EBDA_START, E820_RAM),
        entry(EBDA_START, HIGH_MEMORY_START - EBDA_START, E820_RESERVED),
    ];
    let low_end = memory::low_ram_end(mem);
    map.push(entry(
        HIGH_MEMORY_START,
        low_end - HIGH_MEMORY_START,
        E820_RAM,
    ));
    let total: u64 = {
        use vm_memory::GuestMemoryBackend;
        mem.iter().map(vm_memory::GuestMemoryRegion::len).sum()
    };
    if total > low_end {
        map.push(entry(MMIO_GAP_END, total - low_end, E820_RAM));
    }
    map
}

/// Writes the zero page: boot protocol header, command line, initramfs and
/// the e820 map.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initramfs: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(header) = kernel.setup_header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    if let Some((addr, size)) = initramfs {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = e820_map(mem);
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = *entry;
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(ZeroPage(params), GuestAddress(ZERO_PAGE_START))
        .map_err(|source| BootError::Write {
            what: "zero page",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_leaves_the_legacy_hole_out() {
        let mem = memory::create(64).unwrap();
        let map = e820_map(&mem);
        assert_eq!(
            (map[0].addr, map[0].size, map[0].r#type),
            (0, EBDA_START, E820_RAM)
        );
        assert_eq!({ map[1].r#type }, E820_RESERVED);
        assert_eq!(
            ({ map[2].addr }, { map[2].size }),
            (HIGH_MEMORY_START, (64 << 20) - HIGH_MEMORY_START)
        );
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn cmdline_is_nul_terminated_and_bounded() {
        let mem = memory::create(16).unwrap();
        assert_eq!(write_cmdline(&mem, "console=ttyS0").unwrap(), 13);
        let mut buf = [0u8; 14];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            write_cmdline(&mem, &long),
            Err(BootError::CmdlineTooLong { .. })
        ));
    }

    #[test]
    fn garbage_kernel_is_an_error() {
        let mem = memory::create(16).unwrap();
        let dir = std::env::temp_dir().join(format!("sbx-boot-test-{}", std::process::id()));
        std::fs::write(&dir, [0x55u8; 4096]).unwrap();
        let err = load_kernel(&mem, &dir).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(matches!(err, BootError::LoadKernel { .. }), "{err}");
    }

    #[test]
    fn zero_page_carries_the_header() {
        let mem = memory::create(16).unwrap();
        let k = LoadedKernel {
            entry: 0x100000,
            end: 0x200000,
            setup_header: None,
        };
        write_zero_page(&mem, &k, 10, Some((0x800000, 0x1000))).unwrap();
        let p: ZeroPage = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.0.hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ p.0.hdr.ramdisk_image }, 0x800000);
        assert_eq!(p.0.e820_entries, 3);
    }
}
