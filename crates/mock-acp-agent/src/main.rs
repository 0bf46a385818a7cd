//! `mock-acp-agent`: serve scripted ACP on stdin/stdout. See the library docs for the
//! directive grammar and the environment knobs.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use mock_acp_agent::{CustomAgent, Directive, KiroEngine, MockConfig};
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};

fn main() -> ExitCode {
    if let Ok(message) = std::env::var("MOCK_ACP_FAIL_START") {
        say(&message);
        return ExitCode::from(1);
    }
    init_tracing();
    let config = match config_from_env() {
        Ok(config) => config,
        Err(message) => {
            say(&format!("mock-acp-agent: {message}"));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            say(&format!("mock-acp-agent: no runtime: {error}"));
            return ExitCode::from(2);
        }
    };
    let served = runtime.block_on(async {
        if let Some(delay) = env_millis("MOCK_ACP_START_DELAY_MS").ok().flatten() {
            tokio::time::sleep(delay).await;
        }
        tracing::info!("mock-acp-agent serving ACP on stdio");
        // Pipes (how an ACP client runs us) are read and written as non-blocking pipes on the
        // runtime; tokio's stdin/stdout hand every read and write to a blocking thread, which
        // costs a context switch per line. Anything else (a terminal, a file) keeps those.
        match stdio_pipes() {
            Some((input, output)) => {
                mock_acp_agent::serve(input.compat(), output.compat_write(), config).await
            }
            None => {
                mock_acp_agent::serve(
                    tokio::io::stdin().compat(),
                    tokio::io::stdout().compat_write(),
                    config,
                )
                .await
            }
        }
    });
    let code = match served {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "ACP connection failed");
            1
        }
    };
    // Exit without dropping the runtime: a stdin read still in flight would block its
    // shutdown.
    std::process::exit(code)
}

/// stdin and stdout as async pipes, when both are pipes.
fn stdio_pipes() -> Option<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::FileTypeExt as _;
    let input = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let output = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    // Converting one makes it non-blocking (for every holder of the descriptor): do it only
    // when both are pipes, or the stdio fallback would meet a non-blocking stdin.
    let is_pipe = |fd: &std::os::fd::OwnedFd| {
        fd.try_clone()
            .map(std::fs::File::from)
            .and_then(|file| file.metadata())
            .is_ok_and(|meta| meta.file_type().is_fifo())
    };
    if !(is_pipe(&input) && is_pipe(&output)) {
        return None;
    }
    let input = tokio::net::unix::pipe::Receiver::from_owned_fd(input).ok()?;
    let output = tokio::net::unix::pipe::Sender::from_owned_fd(output).ok()?;
    Some((input, output))
}

fn config_from_env() -> Result<MockConfig, String> {
    let default_directive = match std::env::var("MOCK_ACP_BEHAVIOR") {
        Ok(spec) => spec
            .parse::<Directive>()
            .map_err(|error| format!("MOCK_ACP_BEHAVIOR: {error}"))?,
        Err(_) => Directive::default(),
    };
    let delay = env_millis("MOCK_ACP_DELAY_MS")?.unwrap_or_default();
    let args = KiroArgs::parse(std::env::args().skip(1))?;
    let kiro = match args
        .engine
        .or_else(|| std::env::var("MOCK_ACP_KIRO_ENGINE").ok())
    {
        Some(engine) => Some(engine.parse::<KiroEngine>()?),
        None => None,
    };
    let models = std::env::var("MOCK_ACP_MODELS")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|model| !model.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let agent = match (kiro, &args.agent) {
        // Real v3 refuses v2's launch flags.
        (Some(KiroEngine::V3), _) if !args.v2_only.is_empty() => {
            return Err(format!(
                "error: the v3 engine does not accept {}",
                args.v2_only.join(", ")
            ));
        }
        (Some(KiroEngine::V2), Some(name)) => {
            let home = home.as_deref().ok_or("--agent needs HOME")?;
            Some(
                CustomAgent::load(home, name)
                    .map_err(|error| format!("--agent {name}: {error}"))?,
            )
        }
        _ => None,
    };
    let cold_catalogue = args.cold_catalogue
        || std::env::var("MOCK_ACP_COLD_CATALOGUE").is_ok_and(|value| value == "1");
    Ok(MockConfig {
        default_directive,
        delay,
        kiro,
        models,
        cold_catalogue,
        echo_model: args.echo_model
            || std::env::var("MOCK_ACP_ECHO_MODEL").is_ok_and(|value| value == "1"),
        home,
        auth_cli: args
            .auth_method
            .or_else(|| std::env::var("MOCK_ACP_AUTH_METHOD").ok())
            .is_some_and(|method| method == "cli"),
        agent,
        model: args.model,
        no_mcp_http: args.no_mcp_http
            || std::env::var("MOCK_ACP_MCP_HTTP").is_ok_and(|value| value == "0"),
    })
}

/// The command-line flags: `--kiro-engine v2|v3` (or kiro-cli's own `--agent-engine`),
/// `--cold-catalogue`, `--echo-model`, `--no-mcp-http`, and kiro-cli's `--auth-method M`,
/// `--agent NAME`, `--model ID` and `--trust-all-tools` (the last three v2 only). Anything
/// else (`acp`, `--trust-tools A,B`, ...) is accepted and ignored, so a command line written
/// for kiro-cli runs the mock too.
#[derive(Default)]
struct KiroArgs {
    engine: Option<String>,
    cold_catalogue: bool,
    echo_model: bool,
    no_mcp_http: bool,
    auth_method: Option<String>,
    agent: Option<String>,
    model: Option<String>,
    /// The v2-only flags given, which v3 refuses.
    v2_only: Vec<&'static str>,
}

impl KiroArgs {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut args = args;
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg, None),
            };
            let mut value = || match inline.clone() {
                Some(value) => Ok(value),
                None => args.next().ok_or(format!("{flag} needs a value")),
            };
            match flag.as_str() {
                "--kiro-engine" | "--agent-engine" => parsed.engine = Some(value()?),
                "--auth-method" => parsed.auth_method = Some(value()?),
                "--agent" => {
                    parsed.agent = Some(value()?);
                    parsed.v2_only.push("--agent");
                }
                "--model" => {
                    parsed.model = Some(value()?);
                    parsed.v2_only.push("--model");
                }
                "--trust-all-tools" => parsed.v2_only.push("--trust-all-tools"),
                "--cold-catalogue" => parsed.cold_catalogue = true,
                "--echo-model" => parsed.echo_model = true,
                "--no-mcp-http" => parsed.no_mcp_http = true,
                _ => {}
            }
        }
        Ok(parsed)
    }
}

fn env_millis(key: &str) -> Result<Option<Duration>, String> {
    match std::env::var(key) {
        Ok(value) => value
            .trim()
            .parse::<u64>()
            .map(|ms| Some(Duration::from_millis(ms)))
            .map_err(|_| format!("{key}: `{value}` is not a number of milliseconds")),
        Err(_) => Ok(None),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOCK_ACP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// A line on stderr (stdout is reserved for ACP).
fn say(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{message}");
    let _ = stderr.flush();
}
