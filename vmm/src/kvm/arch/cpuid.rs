//! The CPUID each vCPU sees: what KVM supports, with per-vCPU APIC IDs, the
//! hypervisor bit, and — under PVM — the features its instruction emulator
//! cannot run hidden.
//!
//! Under PVM, KVM_SET_CPUID2 does not stick for leaf 1: the guest sees the
//! host's feature flags whatever the VMM sets (measured: CX16, POPCNT, XSAVE
//! and AVX stay visible). So for a Linux guest the engine also turns those
//! features off on the kernel command line ([`pvm_cmdline`]).
//!
//! Leaf and bit numbers: Intel SDM Vol. 2A, CPUID.

use kvm_bindings::CpuId;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXTENDED_FEATURES: u32 = 0x7;
const LEAF_EXTENDED_TOPOLOGY: u32 = 0xb;

// Leaf 1, ECX.
const ECX_CX16: u32 = 1 << 13;
const ECX_POPCNT: u32 = 1 << 23;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_AVX: u32 = 1 << 28;
const ECX_HYPERVISOR: u32 = 1 << 31;
// Leaf 1, EBX: initial APIC ID in bits 31..24, logical CPU count in 23..16.
const EBX_APIC_ID_SHIFT: u32 = 24;
const EBX_CPU_COUNT_SHIFT: u32 = 16;
// Leaf 1, EDX: hyper-threading (CPU count field valid).
const EDX_HTT: u32 = 1 << 28;
// Leaf 7 subleaf 0, EBX.
const EBX_FSGSBASE: u32 = 1 << 0;
const EBX_AVX2: u32 = 1 << 5;
const EBX_SMAP: u32 = 1 << 20;
const EBX_AVX512_MASK: u32 = 0xd023_0000;

/// Which features to hide from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuidPolicy {
    /// Pass through what KVM supports.
    Host,
    /// /dev/kvm is PVM: its emulator dies on `lock cmpxchg16b` and `xrstor`,
    /// and Linux needs popcnt, SMAP and FSGSBASE off to boot on it.
    Pvm,
}

impl CpuidPolicy {
    /// PVM when the `kvm_pvm` module is loaded.
    pub fn detect() -> Self {
        if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            CpuidPolicy::Pvm
        } else {
            CpuidPolicy::Host
        }
    }
}

/// Kernel parameters that keep Linux off what PVM's emulator cannot run:
/// XSAVE/XRSTOR, `lock cmpxchg16b`, POPCNT, SMAP and FSGSBASE.
const PVM_CLEARCPUID: [&str; 4] = ["cx16", "xsave", "popcnt", "smap"];
const PVM_FLAGS: [&str; 2] = ["noxsave", "nofsgsbase"];

/// `cmdline` with the PVM parameters merged in: an existing `clearcpuid=`
/// list is extended rather than repeated (Linux reads only one).
pub fn pvm_cmdline(cmdline: &str) -> String {
    let mut tokens: Vec<String> = cmdline.split_whitespace().map(str::to_owned).collect();
    match tokens.iter_mut().find(|t| t.starts_with("clearcpuid=")) {
        Some(token) => {
            for name in PVM_CLEARCPUID {
                if !token["clearcpuid=".len()..].split(',').any(|n| n == name) {
                    token.push(',');
                    token.push_str(name);
                }
            }
        }
        None => tokens.push(format!("clearcpuid={}", PVM_CLEARCPUID.join(","))),
    }
    for flag in PVM_FLAGS {
        if !tokens.iter().any(|t| t == flag) {
            tokens.push(flag.to_owned());
        }
    }
    tokens.join(" ")
}

/// Adapts the supported CPUID for vCPU `index` of `count`.
pub fn filter(cpuid: &mut CpuId, index: u8, count: u8, policy: CpuidPolicy) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff)
                    | (u32::from(index) << EBX_APIC_ID_SHIFT)
                    | (u32::from(count) << EBX_CPU_COUNT_SHIFT);
                entry.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= EDX_HTT;
                }
                if policy == CpuidPolicy::Pvm {
                    entry.ecx &= !(ECX_CX16 | ECX_POPCNT | ECX_XSAVE | ECX_OSXSAVE | ECX_AVX);
                }
            }
            LEAF_EXTENDED_FEATURES if entry.index == 0 && policy == CpuidPolicy::Pvm => {
                entry.ebx &= !(EBX_FSGSBASE | EBX_AVX2 | EBX_SMAP | EBX_AVX512_MASK);
            }
            LEAF_EXTENDED_TOPOLOGY => {
                // x2APIC ID of this vCPU.
                entry.edx = u32::from(index);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0800,
                ecx: ECX_CX16 | ECX_XSAVE | ECX_POPCNT | 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ebx: EBX_SMAP | EBX_FSGSBASE | 1 << 3,
                ..Default::default()
            },
        ])
        .unwrap()
    }

    #[test]
    fn pvm_hides_what_its_emulator_cannot_run() {
        let mut c = sample();
        filter(&mut c, 1, 2, CpuidPolicy::Pvm);
        let e = c.as_slice();
        assert_eq!(e[0].ecx & (ECX_CX16 | ECX_XSAVE | ECX_POPCNT), 0);
        assert_eq!(e[0].ecx & 1, 1);
        assert_eq!(e[0].ebx >> 24, 1);
        assert_eq!((e[0].ebx >> 16) & 0xff, 2);
        assert_eq!(e[1].ebx, 1 << 3);
    }

    #[test]
    fn pvm_cmdline_merges_clearcpuid() {
        assert_eq!(
            pvm_cmdline("console=ttyS0"),
            "console=ttyS0 clearcpuid=cx16,xsave,popcnt,smap noxsave nofsgsbase"
        );
        assert_eq!(
            pvm_cmdline("clearcpuid=popcnt,smap nofsgsbase quiet"),
            "clearcpuid=popcnt,smap,cx16,xsave nofsgsbase quiet noxsave"
        );
    }

    #[test]
    fn host_policy_keeps_features() {
        let mut c = sample();
        filter(&mut c, 0, 1, CpuidPolicy::Host);
        assert_ne!(c.as_slice()[0].ecx & ECX_CX16, 0);
        assert_ne!(c.as_slice()[0].ecx & ECX_HYPERVISOR, 0);
    }
}
