//! A real `redis-server` on a free loopback port, for the tests of the ValKey implementations.
//! No persistence, a temporary working directory, killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

/// How long `redis-server` may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The line `redis-server` logs once it accepts connections (Redis and ValKey alike).
const READY: &str = "Ready to accept connections";

/// A running `redis-server`. Dropping it kills it.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Extra `redis-server` arguments (`--requirepass …`).
    args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
}

enum Started {
    Ready,
    Exited,
}

impl RedisServer {
    /// Start a server on a free port of 127.0.0.1 and wait until it answers `PING`.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// [`RedisServer::start`] with extra `redis-server` arguments, e.g.
    /// `["--requirepass", "…"]` (then `PING` answers `-NOAUTH`, which counts as an answer).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        // The port is free when we look and taken by someone else a moment later, now and then.
        for _ in 0..5 {
            server.port = free_port();
            if server.launch() {
                return server;
            }
        }
        panic!(
            "redis-server did not start on a free port; its log:\n{}",
            server.log()
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill the server (its data is gone: there is no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port (after [`RedisServer::stop`]), empty.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.launch(),
            "redis-server did not restart on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("redis log lock").join("\n")
    }

    /// Start `redis-server` on `self.port`; false if it exited before accepting connections
    /// (the port was taken).
    fn launch(&mut self) -> bool {
        let spawned = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "notice"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: run scripts/test-deps.sh (or make test) to install it"
            ),
            Err(error) => panic!("cannot start redis-server: {error}"),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let log = Arc::clone(&self.log);
        // Read its log until it exits, so that the pipe never fills, and say when it is ready.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(READY) {
                    let _ = tx.send(Started::Ready);
                }
                log.lock().expect("redis log lock").push(line);
            }
            let _ = tx.send(Started::Exited);
        });
        self.child = Some(child);
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Started::Ready) => {
                assert!(
                    ping(self.port),
                    "redis-server on port {} is ready but does not answer PING; its log:\n{}",
                    self.port,
                    self.log()
                );
                true
            }
            Ok(Started::Exited) => {
                self.stop();
                false
            }
            Err(_) => {
                self.stop();
                panic!(
                    "redis-server was not ready within {START_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port of 127.0.0.1 that was free a moment ago (`redis-server` has no `--port 0`).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // `+PONG`, or `-NOAUTH …` from a server with a password: either way, it answers.
    let mut reply = [0_u8; 1];
    stream.read_exact(&mut reply).is_ok() && (reply == *b"+" || reply == *b"-")
}
