//! KVM state: the VM (memory slots, irqchip, PIT, irqfd, ioeventfd) and its vCPUs.

pub mod vcpu;
pub mod vm;
