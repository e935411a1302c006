//! EDGE: gRPC over Unix domain sockets, the only transport the kubelet speaks to plugins.
//!
//! Clients use tonic's native `unix://` endpoints (`docs/kubelet.md` §7.4); servers take a bound
//! `UnixListener`. Both the plugin and the test double go through these functions. A socket the
//! kubelet's plugin watcher dials ([`bind_for_plugin_watcher`]) reads its connections through
//! [`AuthorityFixed`], because that client names the socket path as the HTTP/2 `:authority`.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use super::decide::authority::AuthorityRewriter;

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

/// Like [`bind`], for a socket the kubelet's plugin watcher dials (a plugin-registration socket):
/// each connection is read through [`AuthorityFixed`].
pub fn bind_for_plugin_watcher(
    path: &Path,
) -> io::Result<impl Stream<Item = io::Result<AuthorityFixed<UnixStream>>> + use<>> {
    Ok(bind(path)?.map(|conn| conn.map(AuthorityFixed::new)))
}

/// A server-side connection whose incoming HTTP/2 requests carry an acceptable `:authority`
/// ([`AuthorityRewriter`]); writes go straight through.
#[derive(Debug)]
pub struct AuthorityFixed<S> {
    inner: S,
    rewriter: AuthorityRewriter,
    /// Rewritten bytes not handed to the server yet, from `ready_at`.
    ready: Vec<u8>,
    ready_at: usize,
}

impl<S> AuthorityFixed<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: AuthorityRewriter::default(),
            ready: Vec::new(),
            ready_at: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 8192];
            let mut read = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            let before = this.rewriter.rewritten();
            this.rewriter.feed(read.filled(), &mut this.ready);
            if this.rewriter.rewritten() > before {
                debug!("a request named the socket path as its :authority; read as localhost");
            }
            // A partial frame produced nothing yet: read on.
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityFixed<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
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
