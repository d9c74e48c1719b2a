//! Parsing `WWW-Authenticate` and `Authentication-Info` (RFC 9110 §11):
//! what PoP and DPoP servers say when they want a nonce.
//!
//! These now live in [`crate::auth_header`], shared with the server side;
//! this module re-exports them under their old path.

pub use crate::auth_header::{next_nonce, parse_www_authenticate, Challenge};
