//! Just enough of RESP, the Redis/ValKey protocol, to ask a server one command with an integer
//! or bulk-string answer (`DBSIZE`, `RANDOMKEY`) over a plain TCP connection: the soak counts
//! the keys of the stack's ValKey, and samples what they are, without a client library.

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

/// One reply of the kinds this module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `:N`
    Integer(i64),
    /// `$len` then the bytes; `None` for the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
}

/// The first line of `buf` (without its `\r\n`) and where the rest starts; `None` while
/// incomplete.
fn line(buf: &[u8]) -> Result<Option<(&str, usize)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_REPLY {
            bail!("a reply line longer than {MAX_REPLY} bytes");
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("a reply line that is not UTF-8")?;
    Ok(Some((text, end + 2)))
}

/// A reply read from the start of `buf`: `Ok(None)` while it is not complete; an error for an
/// error reply (`-ERR …`), a type this module does not read, or a malformed length or number.
pub fn parse_reply(buf: &[u8]) -> Result<Option<Reply>> {
    let Some((first, rest)) = line(buf)? else {
        return Ok(None);
    };
    match first.split_at_checked(1) {
        Some((":", number)) => number
            .parse::<i64>()
            .map(|n| Some(Reply::Integer(n)))
            .with_context(|| format!("a malformed integer reply {first:?}")),
        Some(("$", "-1")) => Ok(Some(Reply::Bulk(None))),
        Some(("$", len)) => {
            let len: usize = len
                .parse()
                .with_context(|| format!("a malformed bulk length {first:?}"))?;
            if len > MAX_REPLY {
                bail!("a bulk reply of {len} bytes, more than {MAX_REPLY}");
            }
            let Some(body) = buf.get(rest..rest + len + 2) else {
                return Ok(None);
            };
            if !body.ends_with(b"\r\n") {
                bail!("a bulk reply not ended by CRLF");
            }
            Ok(Some(Reply::Bulk(Some(body[..len].to_vec()))))
        }
        Some(("-", message)) => bail!("the server answered an error: {message}"),
        _ => bail!("a reply of a kind not read here: {first:?}"),
    }
}

/// Send `args` to the server at `addr` on a new connection and read its reply.
pub async fn command(addr: SocketAddr, args: &[&str]) -> Result<Reply> {
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.write_all(&encode(args)).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            if let Some(reply) = parse_reply(&buf)? {
                return Ok(reply);
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

/// [`command`] for a command that answers an integer.
pub async fn integer_command(addr: SocketAddr, args: &[&str]) -> Result<i64> {
    match command(addr, args).await? {
        Reply::Integer(n) => Ok(n),
        other => bail!("{} answered {other:?}, not an integer", args.join(" ")),
    }
}

/// The number of keys in the server's current database.
pub async fn dbsize(addr: SocketAddr) -> Result<u64> {
    let keys = integer_command(addr, &["DBSIZE"]).await?;
    u64::try_from(keys).with_context(|| format!("a negative DBSIZE {keys}"))
}

/// `n` keys drawn at random (`RANDOMKEY`), grouped by [`key_family`]: how many of each family,
/// most first. A sample of what fills the database, without walking all of it.
pub async fn key_families(addr: SocketAddr, n: usize) -> Result<Vec<(String, usize)>> {
    let mut families = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..n {
        match command(addr, &["RANDOMKEY"]).await? {
            Reply::Bulk(Some(key)) => {
                *families
                    .entry(key_family(&String::from_utf8_lossy(&key)))
                    .or_default() += 1;
            }
            // An empty database.
            Reply::Bulk(None) => break,
            other => bail!("RANDOMKEY answered {other:?}"),
        }
    }
    let mut families: Vec<(String, usize)> = families.into_iter().collect();
    families.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(families)
}

/// A key without its last `:`-separated part when that part looks like an id (it has a digit):
/// `affinity:warm:3f9a…` → `affinity:warm:*`; a key without one stays as it is.
pub fn key_family(key: &str) -> String {
    match key.rsplit_once(':') {
        Some((family, id)) if id.chars().any(|c| c.is_ascii_digit()) => format!("{family}:*"),
        _ => key.to_owned(),
    }
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

    fn integer(buf: &[u8]) -> Option<Option<i64>> {
        parse_reply(buf).ok().map(|reply| {
            reply.map(|reply| match reply {
                Reply::Integer(n) => n,
                Reply::Bulk(_) => panic!("not an integer: {reply:?}"),
            })
        })
    }

    #[test]
    fn integer_replies_parse_once_complete() {
        assert_eq!(integer(b":42\r\n"), Some(Some(42)));
        assert_eq!(integer(b":0\r\n"), Some(Some(0)));
        assert_eq!(integer(b":-1\r\n"), Some(Some(-1)));
        // A reply cut anywhere before its line end is not an answer yet.
        assert_eq!(integer(b""), Some(None));
        assert_eq!(integer(b":12"), Some(None));
        assert_eq!(integer(b":12\r"), Some(None));
    }

    #[test]
    fn bulk_replies_parse_once_complete() {
        let whole = b"$13\r\naffinity:warm\r\n";
        assert_eq!(
            parse_reply(whole).ok(),
            Some(Some(Reply::Bulk(Some(b"affinity:warm".to_vec()))))
        );
        for cut in 0..whole.len() {
            assert_eq!(parse_reply(&whole[..cut]).ok(), Some(None), "cut at {cut}");
        }
        assert_eq!(parse_reply(b"$-1\r\n").ok(), Some(Some(Reply::Bulk(None))));
        assert_eq!(
            parse_reply(b"$0\r\n\r\n").ok(),
            Some(Some(Reply::Bulk(Some(Vec::new()))))
        );
        assert!(parse_reply(b"$3\r\nabcd\r\n").is_err());
        assert!(parse_reply(b"$x\r\nabc\r\n").is_err());
        assert!(parse_reply(b"$99999999\r\n").is_err());
    }

    #[test]
    fn keys_group_by_family() {
        assert_eq!(
            key_family("affinity:warm:8bab535b4659dca7"),
            "affinity:warm:*"
        );
        assert_eq!(key_family("usage:2026-12-03"), "usage:*");
        assert_eq!(key_family("pod:bench-worker"), "pod:bench-worker");
        assert_eq!(key_family("charged"), "charged");
        assert_eq!(key_family("model:kiro:pods"), "model:kiro:pods");
    }

    #[test]
    fn other_replies_are_errors_that_say_what_came() {
        let error = parse_reply(b"-NOAUTH Authentication required.\r\n")
            .expect_err("an error reply")
            .to_string();
        assert!(error.contains("NOAUTH"), "{error}");
        let array = parse_reply(b"*1\r\n$3\r\nabc\r\n")
            .expect_err("an array")
            .to_string();
        assert!(array.contains("*1"), "{array}");
        assert!(parse_reply(b":12a\r\n").is_err());
        assert!(parse_reply(b":\r\n").is_err());
        assert!(parse_reply(b"\r\n").is_err());
        assert!(parse_reply(&[b'x'; MAX_REPLY]).is_err());
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
        let families = key_families(addr, 10).await.expect("RANDOMKEY");
        assert_eq!(families.iter().map(|(_, n)| n).sum::<usize>(), 10);
        assert!(
            families
                .iter()
                .all(|(family, _)| ["a", "b", "c"].contains(&family.as_str()))
        );
        assert!(integer_command(addr, &["RANDOMKEY"]).await.is_err());
    }
}
