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
        let mem = create(64).unwrap();
        assert_eq!(low_ram_end(&mem), 64 << 20);
    }
}
