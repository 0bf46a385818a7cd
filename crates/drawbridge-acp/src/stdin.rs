//! The child's stdin as the ACP connection writes it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

/// The write half of the ACP transport: the child's stdin, on which a broken pipe (the child
/// closed its stdin, or died) is not an error.
///
/// The ACP crate ends the whole connection when a write fails, dropping the lines it has read
/// from the child's stdout but not dispatched yet and those still in the pipe. Our writes race
/// with the child's death (the crate's `$/cancel_request` when a prompt gives up on a dead
/// child, a `session/cancel`, an answer to a permission request), so a broken pipe there would
/// lose the end of an answer the agent did write. This writer instead discards that write and
/// every later one and cancels `broken`; the connection then ends when the child's stdout does,
/// after everything the child wrote has been dispatched.
pub(crate) struct AgentStdin<W> {
    inner: W,
    broken: CancellationToken,
}

impl<W> AgentStdin<W> {
    /// `broken` is cancelled at the first broken-pipe error.
    pub(crate) fn new(inner: W, broken: CancellationToken) -> Self {
        Self { inner, broken }
    }

    /// Turn a broken pipe into success (and remember it); pass anything else through.
    fn absorb<T>(&self, result: io::Result<T>, done: T) -> io::Result<T> {
        match result {
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                if !self.broken.is_cancelled() {
                    tracing::debug!("the agent's stdin is closed; what we write to it is dropped");
                    self.broken.cancel();
                }
                Ok(done)
            }
            other => other,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for AgentStdin<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.broken.is_cancelled() {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner)
            .poll_write(cx, buf)
            .map(|result| this.absorb(result, buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.broken.is_cancelled() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner)
            .poll_flush(cx)
            .map(|result| this.absorb(result, ()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.broken.is_cancelled() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner)
            .poll_shutdown(cx)
            .map(|result| this.absorb(result, ()))
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::process::Command;

    use super::*;

    #[tokio::test]
    async fn writes_reach_a_live_child() {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let broken = CancellationToken::new();
        let mut stdin = AgentStdin::new(child.stdin.take().unwrap(), broken.clone());
        stdin.write_all(b"hello\n").await.unwrap();
        stdin.flush().await.unwrap();
        stdin.shutdown().await.unwrap();
        drop(stdin);
        let mut echoed = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut echoed)
            .await
            .unwrap();
        assert_eq!(echoed, "hello\n");
        assert!(!broken.is_cancelled());
        assert!(child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn a_dead_childs_stdin_swallows_writes_and_says_so() {
        let mut child = Command::new("true")
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let raw = child.stdin.take().unwrap();
        assert!(child.wait().await.unwrap().success());
        // The precondition: the bare pipe fails. A process forked at the same moment by
        // another test may hold the pipe's read end until it execs (the fd is close-on-exec),
        // so a first write can still be buffered: write until the pipe breaks.
        let mut bare = raw;
        let error = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if let Err(error) = bare.write_all(b"ping\n").await {
                    return error;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the pipe of a dead child breaks");
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);

        let broken = CancellationToken::new();
        let mut stdin = AgentStdin::new(bare, broken.clone());
        stdin.write_all(b"ping\n").await.unwrap();
        assert!(broken.is_cancelled());
        stdin.write_all(b"and more\n").await.unwrap();
        stdin.flush().await.unwrap();
        stdin.shutdown().await.unwrap();
    }
}
