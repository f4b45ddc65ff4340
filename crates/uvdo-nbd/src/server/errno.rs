//! The one place engine errors become NBD errors (STYLE rule 4).

use std::sync::atomic::{AtomicU64, Ordering};

use uvdo::VolumeError;

use crate::proto::NbdErrno;

/// Failures logged one by one before only every [`LOG_EVERY`]th is.
const LOG_FIRST: u64 = 20;
/// After the first [`LOG_FIRST`], one failure in this many is logged, with the count.
const LOG_EVERY: u64 = 1000;

/// Failures of volume calls in this process, for rate-limiting their log lines.
static FAILURES: AtomicU64 = AtomicU64::new(0);

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

/// Logs a failed volume call on stderr (the daemon's log), unless it is the client's own
/// mistake (EINVAL): an operator must be able to see why a volume returned EIO or went
/// read-only, and the reason travels in the error itself. Rate-limited, so a read-only
/// volume under load cannot flood the log.
pub fn log_failure(e: &VolumeError, what: std::fmt::Arguments<'_>) {
    if nbd_errno(e) == NbdErrno::Inval {
        return;
    }
    let n = FAILURES.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= LOG_FIRST || n.is_multiple_of(LOG_EVERY) {
        eprintln!(
            "uvdo-nbd: {what} failed ({:?}, failure {n}): {e}",
            nbd_errno(e)
        );
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
