//! Software keys (`mem:`, `file:`), the protocols they sign (SHR, DPoP,
//! assertions), known answers from the RFCs, and key rotation. Every
//! signature is checked by an implementation popkey did not write.

mod known_answers;
mod protocols;
mod rotation;
mod software_keys;
