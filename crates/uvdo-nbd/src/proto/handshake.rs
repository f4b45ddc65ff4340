//! The fixed newstyle greeting and the client's flags.
//!
//! ```text
//! S: u64 NBDMAGIC | u64 IHAVEOPT | u16 handshake flags (FIXED_NEWSTYLE | NO_ZEROES)
//! C: u32 client flags
//! ```

use super::{Cursor, ProtoError, put_u16, put_u32, put_u64};

/// "NBDMAGIC".
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": starts the greeting's second word and every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Server handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Server handshake flag: the client may omit the 124 zero bytes after EXPORT_NAME.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flag: fixed newstyle understood.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: no zero padding after EXPORT_NAME.
pub const CLIENT_NO_ZEROES: u32 = 2;
/// Bytes of the greeting.
pub const GREETING_BYTES: usize = 18;

/// The server's first message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// Handshake flags.
    pub flags: u16,
}

impl Greeting {
    /// What this server sends.
    pub const SERVER: Self = Self {
        flags: FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES,
    };

    /// Appends the greeting.
    pub fn encode(self, out: &mut Vec<u8>) {
        put_u64(out, NBD_MAGIC);
        put_u64(out, IHAVEOPT);
        put_u16(out, self.flags);
    }

    /// Decodes a greeting (the client side, for tests).
    ///
    /// # Errors
    ///
    /// `Truncated` or `BadMagic`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut c = Cursor::new(bytes, "greeting");
        check_magic(c.u64()?, NBD_MAGIC, "greeting")?;
        check_magic(c.u64()?, IHAVEOPT, "greeting")?;
        let flags = c.u16()?;
        c.finish()?;
        Ok(Self { flags })
    }
}

/// The flags a client answers the greeting with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientFlags {
    /// The client speaks fixed newstyle.
    pub fixed_newstyle: bool,
    /// The client wants no zero padding after EXPORT_NAME.
    pub no_zeroes: bool,
}

impl ClientFlags {
    /// Decodes the client's 4 bytes.
    ///
    /// # Errors
    ///
    /// `Truncated`, or `UnknownClientFlags` (the spec says the server then closes).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut c = Cursor::new(bytes, "client flags");
        let raw = c.u32()?;
        c.finish()?;
        if raw & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
            return Err(ProtoError::UnknownClientFlags(raw));
        }
        Ok(Self {
            fixed_newstyle: raw & CLIENT_FIXED_NEWSTYLE != 0,
            no_zeroes: raw & CLIENT_NO_ZEROES != 0,
        })
    }

    /// Appends the flags (the client side, for tests).
    pub fn encode(self, out: &mut Vec<u8>) {
        let mut raw = 0;
        if self.fixed_newstyle {
            raw |= CLIENT_FIXED_NEWSTYLE;
        }
        if self.no_zeroes {
            raw |= CLIENT_NO_ZEROES;
        }
        put_u32(out, raw);
    }
}

/// Fails unless `found` is `expected`.
///
/// # Errors
///
/// `BadMagic`.
pub fn check_magic(found: u64, expected: u64, what: &'static str) -> Result<(), ProtoError> {
    if found == expected {
        Ok(())
    } else {
        Err(ProtoError::BadMagic {
            what,
            expected,
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn greeting_round_trips(flags: u16) {
            let mut out = Vec::new();
            Greeting { flags }.encode(&mut out);
            prop_assert_eq!(out.len(), GREETING_BYTES);
            prop_assert_eq!(Greeting::decode(&out), Ok(Greeting { flags }));
        }

        #[test]
        fn client_flags_round_trip(fixed_newstyle: bool, no_zeroes: bool) {
            let flags = ClientFlags { fixed_newstyle, no_zeroes };
            let mut out = Vec::new();
            flags.encode(&mut out);
            prop_assert_eq!(ClientFlags::decode(&out), Ok(flags));
        }

        #[test]
        fn unknown_client_flags_are_refused(raw in 4_u32..) {
            let mut bytes = Vec::new();
            put_u32(&mut bytes, raw);
            prop_assert_eq!(ClientFlags::decode(&bytes), Err(ProtoError::UnknownClientFlags(raw)));
        }
    }
}
