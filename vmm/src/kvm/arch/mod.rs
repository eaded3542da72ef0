//! x86_64 specifics: descriptor tables, page tables and registers for a
//! 64-bit entry, CPUID policy, the MP table, and loading the kernel.

pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod mptable;
pub mod regs;
