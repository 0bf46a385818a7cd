//! Just enough of RESP, the Redis/ValKey protocol, to ask a server one command with an integer
//! answer (`DBSIZE`) over a plain TCP connection: the soak counts the keys of the stack's
//! ValKey without a client library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long one command may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest reply we read: an integer reply is a few dozen bytes.
const MAX_REPLY: usize = 4096;

/// `args` as a RESP array of bulk strings, the form every server accepts.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// An integer reply (`:N\r\n`) read from the start of `buf`: `Ok(None)` while the line is not
/// complete; an error for an error reply (`-ERR …`), another type, or a malformed number.
pub fn parse_integer(buf: &[u8]) -> Result<Option<i64>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_REPLY {
            bail!("a reply line longer than {MAX_REPLY} bytes");
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..end]).context("a reply that is not UTF-8")?;
    match line.split_at_checked(1) {
        Some((":", number)) => number
            .parse::<i64>()
            .map(Some)
            .with_context(|| format!("a malformed integer reply {line:?}")),
        Some(("-", message)) => bail!("the server answered an error: {message}"),
        _ => bail!("expected an integer reply, got {line:?}"),
    }
}

/// Send `args` to the server at `addr` on a new connection and read its integer reply.
pub async fn integer_command(addr: SocketAddr, args: &[&str]) -> Result<i64> {
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.write_all(&encode(args)).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            if let Some(value) = parse_integer(&buf)? {
                return Ok(value);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the connection before a full reply");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .with_context(|| format!("{} at {addr} took more than {TIMEOUT:?}", args.join(" ")))?
}

/// The number of keys in the server's current database.
pub async fn dbsize(addr: SocketAddr) -> Result<u64> {
    let keys = integer_command(addr, &["DBSIZE"]).await?;
    u64::try_from(keys).with_context(|| format!("a negative DBSIZE {keys}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(encode(&["DBSIZE"]), b"*1\r\n$6\r\nDBSIZE\r\n");
        assert_eq!(
            encode(&["GET", "charged:é"]),
            "*2\r\n$3\r\nGET\r\n$10\r\ncharged:é\r\n".as_bytes()
        );
    }

    #[test]
    fn integer_replies_parse_once_complete() {
        assert_eq!(parse_integer(b":42\r\n").ok(), Some(Some(42)));
        assert_eq!(parse_integer(b":0\r\n").ok(), Some(Some(0)));
        assert_eq!(parse_integer(b":-1\r\n").ok(), Some(Some(-1)));
        // A reply cut anywhere before its line end is not an answer yet.
        assert_eq!(parse_integer(b"").ok(), Some(None));
        assert_eq!(parse_integer(b":12").ok(), Some(None));
        assert_eq!(parse_integer(b":12\r").ok(), Some(None));
    }

    #[test]
    fn other_replies_are_errors_that_say_what_came() {
        let error = parse_integer(b"-NOAUTH Authentication required.\r\n")
            .expect_err("an error reply")
            .to_string();
        assert!(error.contains("NOAUTH"), "{error}");
        let bulk = parse_integer(b"$3\r\nabc\r\n")
            .expect_err("a bulk string")
            .to_string();
        assert!(bulk.contains("$3"), "{bulk}");
        assert!(parse_integer(b":12a\r\n").is_err());
        assert!(parse_integer(b":\r\n").is_err());
        assert!(parse_integer(b"\r\n").is_err());
        assert!(parse_integer(&[b'x'; MAX_REPLY]).is_err());
    }

    #[tokio::test]
    async fn dbsize_counts_the_keys_of_a_real_server() {
        let redis = test_support::redis::RedisServer::start();
        let addr = SocketAddr::from(([127, 0, 0, 1], redis.port()));
        assert_eq!(dbsize(addr).await.expect("DBSIZE"), 0);
        for key in ["a", "b", "c"] {
            let reply = integer_command(addr, &["RPUSH", key, "x"]).await;
            assert_eq!(reply.expect("RPUSH"), 1);
        }
        assert_eq!(dbsize(addr).await.expect("DBSIZE"), 3);
    }
}
