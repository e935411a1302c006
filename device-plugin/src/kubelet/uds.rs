//! EDGE: gRPC over Unix domain sockets, the only transport the kubelet speaks to plugins.
//!
//! Clients use tonic's native `unix://` endpoints (`docs/kubelet.md` §7.4); servers take a bound
//! `UnixListener`. Both the plugin and the test double go through these two functions.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint};

/// Connects a gRPC channel to the Unix socket at `path`, giving up after `timeout`.
///
/// The path is made absolute first, because a relative one would be read as a URI authority.
pub async fn connect(path: &Path, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let endpoint =
        Endpoint::from_shared(format!("unix://{}", absolute.display()))?.connect_timeout(timeout);
    endpoint.connect().await
}

/// Binds a listening Unix socket at `path`, removing a stale file of that name first (bind fails on
/// an existing path), and returns the stream of connections tonic serves.
pub fn bind(path: &Path) -> io::Result<UnixListenerStream> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    Ok(UnixListenerStream::new(UnixListener::bind(path)?))
}

/// Removes the socket file at `path` if it is there; a missing file is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// `dir/name` made absolute, so socket paths print and compare the same everywhere.
pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    let joined = dir.join(name);
    std::path::absolute(&joined).unwrap_or(joined)
}
