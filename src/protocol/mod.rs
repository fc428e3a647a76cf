//! The git wire protocol, server side: pkt-lines, request parsing, ref advertisement and the
//! upload-pack negotiation for protocol v0/v1 and v2.

pub mod advertise;
pub mod pktline;
pub mod request;
pub mod sideband;
pub mod upload_pack;
