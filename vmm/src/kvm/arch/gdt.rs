//! The boot GDT: flat 64-bit code and data segments, and a TSS.
//!
//! Segment descriptor layout: Intel SDM Vol. 3A, 3.4.5.

use kvm_bindings::kvm_segment;

/// Packs a segment descriptor from its flags (type, S, DPL, P in bits
/// 0..8; AVL, L, D/B, G in bits 12..16), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// Null, code (64-bit, L=1), data (read/write), TSS (busy, 64-bit).
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// The KVM segment register for GDT entry `index` (selector = index * 8).
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let field = |shift: u32, mask: u64| ((entry >> shift) & mask) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let granularity = field(55, 1);
    kvm_segment {
        base,
        // With G=1 the limit counts 4 KiB pages.
        limit: if granularity == 1 {
            (limit << 12) | 0xfff
        } else {
            limit
        },
        selector: u16::from(index) * 8,
        type_: field(40, 0xf),
        present: field(47, 1),
        dpl: field(45, 3),
        db: field(54, 1),
        s: field(44, 1),
        l: field(53, 1),
        g: granularity,
        avl: field(52, 1),
        padding: 0,
        unusable: u8::from(field(47, 1) == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit() {
        let cs = kvm_segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!(cs.selector, 0x8);
        assert_eq!((cs.l, cs.db, cs.present, cs.s, cs.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(cs.limit, 0xffff_ffff);
    }

    #[test]
    fn data_segment_is_flat() {
        let ds = kvm_segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!((ds.base, ds.limit, ds.type_, ds.db), (0, 0xffff_ffff, 3, 1));
    }

    #[test]
    fn entry_matches_known_encoding() {
        // Firecracker and Linux encode the 64-bit code segment this way.
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
    }
}
