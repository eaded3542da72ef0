//! kvm engine: a test guest exchanges bytes with the host over a
//! virtio-console port: it transmits a greeting, receives what the host
//! wrote, and sends it back.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use sbx_vmm::config::Console;
use sbx_vmm::kvm::VmExit;

#[test]
fn guest_and_host_exchange_bytes() {
    common::require_kvm();
    let dir = common::scratch("virtio-console");
    let (mut from_guest, to_host) = std::io::pipe().unwrap();
    let (from_host, mut to_guest) = std::io::pipe().unwrap();
    to_guest.write_all(b"ping from the host\n").unwrap();

    let mut config = common::config(common::payload("virtio_console"), &dir.join("serial.log"));
    config.consoles.push(Console {
        to_host: Some(to_host.into()),
        from_host: Some(from_host.into()),
    });
    let (result, serial) = common::boot(config, Duration::from_secs(30));
    let report = result.unwrap_or_else(|e| panic!("run failed: {e}\nserial:\n{serial}"));
    assert_eq!(report.exit, VmExit::ExitCode(0), "serial:\n{serial}");
    drop(to_guest);

    // The VMM closed its end when the run ended.
    let mut output = String::new();
    from_guest.read_to_string(&mut output).unwrap();
    assert_eq!(
        output, "hello from the guest console\necho: ping from the host\n",
        "serial:\n{serial}"
    );
}
