//! Transmission flags: what the export supports, sent with INFO_EXPORT or EXPORT_NAME.

/// Always set: the other flags mean something.
pub const HAS_FLAGS: u16 = 1 << 0;
/// Writes are refused with EPERM.
pub const READ_ONLY: u16 = 1 << 1;
/// FLUSH is supported.
pub const SEND_FLUSH: u16 = 1 << 2;
/// FUA is supported.
pub const SEND_FUA: u16 = 1 << 3;
/// Seeks are slow (never set here).
pub const ROTATIONAL: u16 = 1 << 4;
/// TRIM is supported.
pub const SEND_TRIM: u16 = 1 << 5;
/// WRITE_ZEROES (and NO_HOLE) is supported.
pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
/// DF is supported (only with structured replies).
pub const SEND_DF: u16 = 1 << 7;
/// Several connections see one another's replied-to writes, and FLUSH covers them all.
pub const CAN_MULTI_CONN: u16 = 1 << 8;
/// CACHE is supported.
pub const SEND_CACHE: u16 = 1 << 10;
/// FAST_ZERO is supported.
pub const SEND_FAST_ZERO: u16 = 1 << 11;

/// The flags this server sends: every command it implements, multi-conn (FLUSH is
/// volume-wide), DF only when structured replies are on, READ_ONLY for a read-only volume.
#[must_use]
pub fn for_export(read_only: bool, structured: bool) -> u16 {
    let mut flags = HAS_FLAGS
        | SEND_FLUSH
        | SEND_FUA
        | SEND_TRIM
        | SEND_WRITE_ZEROES
        | SEND_FAST_ZERO
        | SEND_CACHE
        | CAN_MULTI_CONN;
    if structured {
        flags |= SEND_DF;
    }
    if read_only {
        flags |= READ_ONLY;
    }
    flags
}
