//! Where the server listens: a Unix socket (mode 0600), TCP on 127.0.0.1, or a socket
//! passed by the service manager (`LISTEN_PID`/`LISTEN_FDS`, fd 3).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};

use crate::server::stream::Stream;

/// The first fd a service manager passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket; `path` is removed when the listener is dropped if this process bound it.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Its path, when bound by us.
        path: Option<PathBuf>,
    },
    /// A TCP socket on 127.0.0.1.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds a Unix socket at `path` with mode 0600. The socket is created in a private
    /// directory and renamed into place, so it is never reachable with wider permissions. A
    /// stale socket (nobody accepting) at `path` is replaced; anything else there is an error.
    ///
    /// # Errors
    ///
    /// `AddrInUse` when a live server or another file is at `path`; any bind error.
    pub fn bind_unix(path: &Path) -> io::Result<Self> {
        if path.exists() {
            let stale = std::fs::metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) && UnixStream::connect(path).is_err();
            if !stale {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} exists", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or_else(|| Path::new("."));
        let private = parent.join(format!(".uvdo-nbd-{}.d", std::process::id()));
        std::fs::create_dir(&private)?;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
        let staged = private.join("sock");
        let result = UnixListener::bind(&staged).and_then(|listener| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&staged, path)?;
            Ok(listener)
        });
        let _ = std::fs::remove_file(&staged);
        let _ = std::fs::remove_dir(&private);
        Ok(Self::Unix {
            listener: result?,
            path: Some(path.to_path_buf()),
        })
    }

    /// Binds TCP on 127.0.0.1:`port` (0 picks a free port).
    ///
    /// # Errors
    ///
    /// Any bind error.
    pub fn bind_tcp(port: u16) -> io::Result<Self> {
        Self::bind_tcp_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Binds TCP on `addr`, which must be 127.0.0.1: the export has no authentication.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for any other address; any bind error.
    pub fn bind_tcp_addr(addr: SocketAddr) -> io::Result<Self> {
        if addr.ip() != std::net::IpAddr::V4(Ipv4Addr::LOCALHOST) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to listen on {addr}: only 127.0.0.1 is allowed"),
            ));
        }
        Ok(Self::Tcp(TcpListener::bind(addr)?))
    }

    /// The socket a service manager passed, if `LISTEN_PID` is this process and `LISTEN_FDS`
    /// is at least 1 (libnbd's `[ command ]` form does this). Clears the variables so that
    /// children do not see them.
    ///
    /// # Errors
    ///
    /// fd 3 is not a Unix or TCP socket.
    pub fn from_socket_activation() -> io::Result<Option<Self>> {
        let pid_matches = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        let fds = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse::<u32>().ok());
        if !pid_matches || fds.unwrap_or(0) < 1 {
            return Ok(None);
        }
        // SAFETY: the service manager protocol hands this process fd 3 and nothing else owns
        // it; taking ownership once, here, is the protocol's intent. The env check above and
        // the removal below make this happen at most once per process.
        let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
        // SAFETY: no other thread reads or writes these variables during startup.
        unsafe {
            std::env::remove_var("LISTEN_PID");
            std::env::remove_var("LISTEN_FDS");
            std::env::remove_var("LISTEN_FDNAMES");
        }
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let family = getsockname::<SockaddrStorage>(raw)?.family();
        match family {
            Some(AddressFamily::Unix) => Ok(Some(Self::Unix {
                listener: UnixListener::from(fd),
                path: None,
            })),
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                Ok(Some(Self::Tcp(TcpListener::from(fd))))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket activation passed fd 3, which is not a Unix or TCP socket",
            )),
        }
    }

    /// The NBD URI clients connect to, when the address is known.
    #[must_use]
    pub fn uri(&self) -> Option<String> {
        match self {
            Self::Unix {
                path: Some(path), ..
            } => Some(format!("nbd+unix:///?socket={}", path.display())),
            Self::Unix { listener, .. } => {
                let addr = listener.local_addr().ok()?;
                let path = addr.as_pathname()?;
                Some(format!("nbd+unix:///?socket={}", path.display()))
            }
            Self::Tcp(listener) => {
                let addr = listener.local_addr().ok()?;
                Some(format!("nbd://{}:{}", addr.ip(), addr.port()))
            }
        }
    }

    /// Accepts a connection.
    ///
    /// # Errors
    ///
    /// Any accept error.
    pub(crate) fn accept(&self) -> io::Result<Stream> {
        match self {
            Self::Unix { listener, .. } => Ok(Stream::Unix(listener.accept()?.0)),
            Self::Tcp(listener) => {
                let (stream, _) = listener.accept()?;
                let _ = TcpStream::set_nodelay(&stream, true);
                Ok(Stream::Tcp(stream))
            }
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix { listener, .. } => listener.as_fd(),
            Self::Tcp(listener) => listener.as_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix {
            path: Some(path), ..
        } = self
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_sockets_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = Listener::bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            listener.uri().unwrap(),
            format!("nbd+unix:///?socket={}", path.display())
        );
        assert!(
            Listener::bind_unix(&path).is_err(),
            "a live socket is in use"
        );
        drop(listener);
        assert!(!path.exists());
    }

    #[test]
    fn tcp_refuses_addresses_other_than_localhost() {
        let err = Listener::bind_tcp_addr("0.0.0.0:0".parse().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let listener = Listener::bind_tcp(0).unwrap();
        assert!(listener.uri().unwrap().starts_with("nbd://127.0.0.1:"));
    }
}
