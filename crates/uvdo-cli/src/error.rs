//! Exit statuses (VDO's table, research/vdo_cli.md section 1) and the one place engine errors
//! map to them.

use std::fmt;

use uvdo::VolumeError;

/// The exit statuses of `vdo`, which `uvdo` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    /// 0: success, including idempotent no-ops.
    Success,
    /// 1: non-specific (no command given, an audit that found problems).
    Generic,
    /// 2: bad arguments.
    Usage,
    /// 4: developer error (an unknown operation state in the registry).
    Developer,
    /// 5: wrong state (not running, not activated, incomplete operation, in use).
    State,
    /// 6: system failure (a daemon that does not start or stop, an unsupported operation).
    System,
    /// 7: user error (no such volume, already exists, device already configured).
    User,
}

impl ExitStatus {
    /// The process exit code.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Generic => 1,
            Self::Usage => 2,
            Self::Developer => 4,
            Self::State => 5,
            Self::System => 6,
            Self::User => 7,
        }
    }

    /// The worse of two statuses (`--all` reports the worst, not only the last).
    #[must_use]
    pub fn worst(self, other: Self) -> Self {
        if other.code() > self.code() {
            other
        } else {
            self
        }
    }
}

/// A command failed: what to print (`uvdo: ERROR - <message>`) and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// How the process exits.
    pub status: ExitStatus,
    /// The message.
    pub message: String,
}

impl CliError {
    /// A failure with `status`.
    pub fn new(status: ExitStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// Exit 1.
    pub fn generic(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::Generic, message)
    }

    /// Exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::Usage, message)
    }

    /// Exit 5.
    pub fn state(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::State, message)
    }

    /// Exit 6.
    pub fn system(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::System, message)
    }

    /// Exit 7.
    pub fn user(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::User, message)
    }

    /// An engine error, with what was being done.
    #[must_use]
    pub fn volume(doing: &str, e: &VolumeError) -> Self {
        Self::new(volume_status(e), format!("{doing}: {e}"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The exit status of each engine error (STYLE rule 4: one place).
#[must_use]
pub fn volume_status(e: &VolumeError) -> ExitStatus {
    match e {
        // Wrong state of the volume: read-only, full, needing recovery, or holding data.
        VolumeError::ReadOnly { .. }
        | VolumeError::NoSpace { .. }
        | VolumeError::NeedsRecovery { .. }
        | VolumeError::AlreadyFormatted { .. }
        | VolumeError::NotAVolume(_) => ExitStatus::State,
        VolumeError::InvalidArgument { .. } | VolumeError::InvalidConfig(_) => ExitStatus::User,
        VolumeError::Io(_) | VolumeError::Corrupt(_) | VolumeError::Invariant { .. } => {
            ExitStatus::System
        }
    }
}

/// The result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;
