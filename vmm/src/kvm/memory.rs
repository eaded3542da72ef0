//! Guest RAM: anonymous private mappings, populated lazily by the host as
//! the guest touches pages, split around the 32-bit MMIO gap.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// Guest memory failures.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// `--memory` out of range.
    #[error("guest memory of {mib} MiB: must be between 2 and 1048576 MiB")]
    InvalidSize { mib: u64 },
    /// mmap of the RAM regions.
    #[error("map {mib} MiB of guest memory: {source}")]
    Map {
        mib: u64,
        source: vm_memory::mmap::FromRangesError,
    },
}

/// The (start, length) RAM ranges for `size` bytes of guest memory.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// Maps `mib` MiB of guest RAM. Nothing is touched: the host allocates a
/// page when the guest (or a device) first uses it.
pub fn create(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if !(2..=1 << 20).contains(&mib) {
        return Err(MemoryError::InvalidSize { mib });
    }
    GuestMemoryMmap::from_ranges(&ram_ranges(mib << 20))
        .map_err(|source| MemoryError::Map { mib, source })
}

/// End of RAM below the MMIO gap (exclusive).
pub fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    mem.iter()
        .map(|r| r.start_addr().0 + r.len())
        .filter(|end| *end <= MMIO_GAP_START)
        .max()
        .unwrap_or(0)
}

/// Bytes of guest RAM the host has actually allocated (pages the guest or
/// the VMM touched), by mincore(2) over each region.
pub fn resident_bytes(mem: &GuestMemoryMmap) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
    const PAGE: usize = 4096;
    const CHUNK: usize = 1 << 30;
    let mut pages = 0u64;
    let mut vec = vec![0u8; CHUNK / PAGE];
    for region in mem.iter() {
        let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else {
            continue;
        };
        let len = region.len() as usize;
        let mut offset = 0;
        while offset < len {
            let n = (len - offset).min(CHUNK);
            // SAFETY: [host + offset, +n) lies inside the region's live
            // mapping, page aligned; `vec` holds one byte per page of it.
            let r = unsafe { libc::mincore(host.add(offset).cast(), n, vec.as_mut_ptr()) };
            if r == 0 {
                pages += vec[..n.div_ceil(PAGE)]
                    .iter()
                    .filter(|b| *b & 1 != 0)
                    .count() as u64;
            }
            offset += n;
        }
    }
    pages * PAGE as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(r[1], (GuestAddress(MMIO_GAP_END), (1 << 30) as usize));
    }

    #[test]
    fn rejects_tiny_memory() {
        assert!(matches!(create(1), Err(MemoryError::InvalidSize { .. })));
    }

    #[test]
    fn maps_lazily() {
        use vm_memory::Bytes;
        let mem = create(64).unwrap();
        assert_eq!(low_ram_end(&mem), 64 << 20);
        assert_eq!(resident_bytes(&mem), 0);
        mem.write_obj(1u64, GuestAddress(0x5000)).unwrap();
        assert_eq!(resident_bytes(&mem), 4096);
    }
}
