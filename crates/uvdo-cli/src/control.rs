//! The daemon's control socket: one JSON object per line each way. A request names its
//! operation in `op`; the answer is `{"ok": true, "data": ...}` or `{"ok": false, "status":
//! <exit status>, "error": "..."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CliError, CliResult, ExitStatus};

/// Bytes of one request or answer line (STYLE rule 7).
pub const LINE_BYTES_MAX: u64 = 1 << 20;
/// How long a quick request may take before the daemon counts as not answering.
pub const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// A request to the daemon.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// The volume's statistics (a `StatsView`).
    Stats,
    /// Mode, recovery, owner, URI and statistics (a `LiveStatus`).
    Status,
    /// Drain, close the volume cleanly and exit; answered once closed.
    Stop,
    /// Change the write policy of the running volume.
    ChangeWritePolicy {
        /// sync, async, async-unsafe or auto.
        policy: String,
    },
    /// Turn compression on or off.
    SetCompression {
        /// On or off.
        enabled: bool,
    },
    /// Turn deduplication on or off.
    SetDeduplication {
        /// On or off.
        enabled: bool,
    },
    /// Grow the logical size.
    GrowLogical {
        /// The new size in bytes.
        bytes: u64,
    },
    /// Grow into the whole backing device.
    GrowPhysical,
}

/// An answer from the daemon.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What it returned.
    #[serde(default)]
    pub data: Value,
    /// How the CLI exits when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ExitStatus>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    /// Success with `data`.
    #[must_use]
    pub fn ok(data: Value) -> Self {
        Self {
            ok: true,
            data,
            status: None,
            error: None,
        }
    }

    /// Failure.
    #[must_use]
    pub fn err(e: &CliError) -> Self {
        Self {
            ok: false,
            data: Value::Null,
            status: Some(e.status),
            error: Some(e.message.clone()),
        }
    }
}

/// Sends `request` to the daemon at `socket` and returns its data. `wait` bounds the answer
/// (`None` for a stop, which closes the volume and may take long).
///
/// # Errors
///
/// Exit 5 when no daemon answers at `socket` (not running); the daemon's own status when it
/// refused the request.
pub fn call(socket: &Path, request: &Request, wait: Option<Duration>) -> CliResult<Value> {
    let not_running = |e: std::io::Error| {
        CliError::state(format!("no daemon answers at {}: {e}", socket.display()))
    };
    let mut stream = UnixStream::connect(socket).map_err(not_running)?;
    stream.set_read_timeout(wait).map_err(not_running)?;
    let mut line = serde_json::to_string(request).unwrap_or_default();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(not_running)?;
    let mut reader = BufReader::new(std::io::Read::take(stream, LINE_BYTES_MAX));
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(|e| {
        CliError::system(format!(
            "the daemon at {} did not answer: {e}",
            socket.display()
        ))
    })?;
    let answer: Answer = serde_json::from_str(&answer)
        .map_err(|e| CliError::system(format!("bad answer from {}: {e}", socket.display())))?;
    if answer.ok {
        Ok(answer.data)
    } else {
        Err(CliError::new(
            answer.status.unwrap_or(ExitStatus::Generic),
            answer.error.unwrap_or_default(),
        ))
    }
}

/// Whether a daemon answers at `socket`.
#[must_use]
pub fn is_running(socket: &Path) -> bool {
    call(socket, &Request::Status, Some(ANSWER_WAIT)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_camel_case_json_lines() {
        let r = Request::ChangeWritePolicy {
            policy: "sync".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"op":"changeWritePolicy","policy":"sync"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let stop: Request = serde_json::from_str(r#"{"op":"stop"}"#).unwrap();
        assert_eq!(stop, Request::Stop);
    }
}
