//! `sbx login`: check credentials against the registry (`GET /v2/`, which
//! answers Basic or sends to the token endpoint), and only then store them.

use crate::auth_file::{AuthFile, Credentials};
use crate::client::Client;
use crate::endpoint::Endpoint;
use crate::error::RegistryError;

/// Check `creds` with `registry` and save them in `file`.
pub fn login(
    file: &AuthFile,
    registry: &str,
    creds: Credentials,
    insecure: &[String],
) -> Result<(), RegistryError> {
    let client = Client::new(
        Endpoint::new(registry, insecure),
        Some(creds.clone()),
        Vec::new(),
    );
    client.ping()?;
    file.set(registry, &creds)
}

/// Forget the credentials of `registry`; says whether there were any.
pub fn logout(file: &AuthFile, registry: &str) -> Result<bool, RegistryError> {
    file.remove(registry)
}
