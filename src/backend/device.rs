//! What a device says about itself: [`DeviceInfo`], for `key show` and
//! [`crate::KeyLocation::device`].

use std::fmt;

/// Whether the device that holds a key is hardware, as far as popkey can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceKind {
    /// A hardware device: a PKCS#11 slot that sets `CKF_HW_SLOT` and is not
    /// a known software token, or a TPM that is not a known simulator.
    Hardware,
    /// Software behind a device interface: SoftHSM, swtpm, the IBM TPM
    /// simulator, or a PKCS#11 slot without `CKF_HW_SLOT`.
    Software,
    /// The device did not answer the questions popkey asks.
    Unknown,
}

impl DeviceKind {
    /// `hardware`, `software` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Hardware => "hardware",
            DeviceKind::Software => "software",
            DeviceKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for DeviceKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What the device that holds a key reports about itself, read when the
/// key is opened. Every text field is what the device says (trimmed), or
/// `None` when it says nothing.
///
/// | field | PKCS#11 | TPM 2.0 |
/// |---|---|---|
/// | `manufacturer` | token `manufacturerID` | `TPM_PT_MANUFACTURER` |
/// | `model` | token `model` | `TPM_PT_VENDOR_STRING_1..4` |
/// | `serial` | token `serialNumber` | — |
/// | `firmware` | token `firmwareVersion` (`major.minor`) | `TPM_PT_FIRMWARE_VERSION_1`/`_2` as four 16-bit parts, `a.b.c.d` |
/// | `description` | library description (`C_GetInfo`) and version | `TPM 2.0` with the specification revision |
/// | `hardware_slot` | the slot's `CKF_HW_SLOT` flag | — |
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// Hardware or software, as far as popkey can tell.
    pub kind: DeviceKind,
    /// The name of a software device popkey recognized (`SoftHSM`,
    /// `swtpm / IBM TPM simulator`); `None` for anything else.
    pub known_as: Option<String>,
    /// Who made the device (PKCS#11 token manufacturer, TPM manufacturer ID).
    pub manufacturer: Option<String>,
    /// The device model (PKCS#11 token model, TPM vendor string).
    pub model: Option<String>,
    /// The device serial number (PKCS#11 tokens).
    pub serial: Option<String>,
    /// The firmware version.
    pub firmware: Option<String>,
    /// The PKCS#11 library description, or the TPM family and revision.
    pub description: Option<String>,
    /// PKCS#11 only: whether the slot says it is a hardware slot
    /// (`CKF_HW_SLOT`); a slot without it is a soft token.
    pub hardware_slot: Option<bool>,
}

impl DeviceInfo {
    /// A device that could not be asked.
    #[cfg(any(feature = "pkcs11", feature = "tpm"))]
    pub(crate) fn unknown() -> Self {
        DeviceInfo {
            kind: DeviceKind::Unknown,
            known_as: None,
            manufacturer: None,
            model: None,
            serial: None,
            firmware: None,
            description: None,
            hardware_slot: None,
        }
    }

    /// True for [`DeviceKind::Hardware`].
    pub fn is_hardware(&self) -> bool {
        self.kind == DeviceKind::Hardware
    }
}

/// `Some(trimmed)` unless empty.
#[cfg(any(feature = "pkcs11", feature = "tpm"))]
pub(crate) fn text(s: &str) -> Option<String> {
    let t = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!t.is_empty()).then(|| t.to_owned())
}
