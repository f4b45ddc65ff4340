//! The one place engine errors become NBD errors (STYLE rule 4).

use uvdo::VolumeError;

use crate::proto::NbdErrno;

/// The NBD error a failed volume call is reported as, chosen by variant (never by guessing
/// from an errno): EPERM for a read-only volume, ENOSPC for a full pool, EINVAL for a bad
/// request, EIO for the store failing and for damaged metadata.
#[must_use]
pub fn nbd_errno(e: &VolumeError) -> NbdErrno {
    match e {
        VolumeError::ReadOnly { .. } => NbdErrno::Perm,
        VolumeError::NoSpace { .. } => NbdErrno::NoSpc,
        VolumeError::InvalidArgument { .. } | VolumeError::InvalidConfig(_) => NbdErrno::Inval,
        VolumeError::Io(_)
        | VolumeError::Corrupt(_)
        | VolumeError::NotAVolume(_)
        | VolumeError::NeedsRecovery { .. }
        | VolumeError::Invariant { .. }
        | VolumeError::AlreadyFormatted { .. } => NbdErrno::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_map_to_the_protocols_values() {
        let read_only = VolumeError::ReadOnly {
            reason: "test".into(),
        };
        assert_eq!(nbd_errno(&read_only), NbdErrno::Perm);
        let full = VolumeError::NoSpace { data_blocks: 1 };
        assert_eq!(nbd_errno(&full), NbdErrno::NoSpc);
        let bad = VolumeError::InvalidArgument { what: "x".into() };
        assert_eq!(nbd_errno(&bad), NbdErrno::Inval);
        let broken = VolumeError::NeedsRecovery { state: "x".into() };
        assert_eq!(nbd_errno(&broken), NbdErrno::Io);
    }
}
