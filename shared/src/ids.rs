//! Sandbox ids: 64 hex digits like Docker's, shown shortened to 12.

/// A fresh random sandbox id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    // getrandom only fails when the kernel has no entropy source at all;
    // fall back to time and pid so an id is still unique on this host.
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(bytes)
}

/// The 12-digit form shown in tables.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
