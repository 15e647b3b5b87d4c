//! The domain: the types every layer shares (API, store, queue, bindings, simulator).
//!
//! Nothing here does I/O. `store/` and `api/` import these from here, never from `binding/` or
//! `queue/`; bindings re-export the ones their callers name with them.
//!
//! * [`address`] — typed device addresses, one parser per type, used at every edge.
//! * [`binding`] — binding kinds, a device's bindings ([`DeviceBinding`]), payload types.
//! * [`device`] — a registered device and its DM account data.
//! * [`push`] — push states and receipts (the late results that finish a push).
//! * [`clock`] — the process clock and a test clock.

pub mod address;
pub mod binding;
pub mod clock;
pub mod device;
pub mod push;

pub use address::{AddressError, HttpTarget, Msisdn, ObexAddr, SipAddress, UdpAddr};
pub use binding::{
    BindingKind, ContentType, DeviceBinding, HmacCredentials, HttpFraming, WapBearer,
};
pub use clock::{Clock, ManualClock, SystemClock, now_ms};
pub use device::{Device, DmCredentials};
pub use push::{DEFAULT_RECEIPT_HOLD, NextHopRef, PushState, Receipt, ReceiptAck};
