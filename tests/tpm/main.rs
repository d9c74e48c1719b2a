//! TPM 2.0 keys on private swtpm instances (one per test, killed on drop):
//! keys, interop with tpm2-tools and the tpm2 OpenSSL provider, bad input,
//! recovery after simulator restarts, replaced persistent keys.
//! The fork test runs in a process of its own (`tests/tpm_fork.rs`).
#![cfg(feature = "tpm")]

mod bad_input;
mod interop;
mod keys;
mod recovery;
mod replaced;
