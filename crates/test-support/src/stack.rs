//! A whole Drawbridge on this machine, in either shape, with `mock-acp-agent` accounts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::http::Client;
use crate::process::{Process, binary, processes_under};
use crate::wait::poll;

/// The client key every test stack accepts (a static key without a rate limit).
pub const API_KEY: &str = "db-test-key-0123456789";
/// The admin token of every test stack.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const CHANNEL_KEY: &str = "test-channel-key-0123";

/// One account of a test stack: its pool and extra agent environment (e.g.
/// `MOCK_ACP_BEHAVIOR`).
#[derive(Debug, Clone)]
pub struct AccountSpec {
    pub pool_size: u32,
    pub env: Vec<(String, String)>,
    /// `credits:` (the account's grant); `None`: unmetered.
    pub credits: Option<f64>,
    /// The agent's arguments (e.g. kiro-cli's `acp --agent-engine v3 --auth-method cli`,
    /// which makes the mock speak that Kiro dialect).
    pub args: Vec<String>,
    /// More keys of the account's `agent:` section, e.g. `tools: builtin`.
    pub agent_yaml: Vec<String>,
}

impl AccountSpec {
    pub fn new(pool_size: u32) -> Self {
        AccountSpec {
            pool_size,
            env: Vec::new(),
            credits: None,
            args: Vec::new(),
            agent_yaml: Vec::new(),
        }
    }

    /// An account whose mock agent speaks Kiro 2.22's `engine` dialect (`v2` or `v3`), started
    /// the way a real account of that engine is (v3 with `--auth-method cli`).
    pub fn kiro(pool_size: u32, engine: &str) -> Self {
        let mut account = Self::new(pool_size);
        account.args = ["acp", "--agent-engine", engine]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if engine == "v3" {
            account
                .args
                .extend(["--auth-method".to_owned(), "cli".to_owned()]);
        }
        account
    }

    /// Another agent argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Another key of the account's `agent:` section (`key: value`).
    pub fn agent(mut self, line: &str) -> Self {
        self.agent_yaml.push(line.to_owned());
        self
    }

    /// An agent environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The mock agent's behaviour for every prompt without a directive.
    pub fn behaviour(mut self, behaviour: &str) -> Self {
        self.env
            .push(("MOCK_ACP_BEHAVIOR".to_owned(), behaviour.to_owned()));
        self
    }

    /// A metered account with this many credits.
    pub fn credits(mut self, credits: f64) -> Self {
        self.credits = Some(credits);
        self
    }

    /// The `credits:` line of the account's YAML entry (empty when unmetered).
    pub fn credits_yaml(&self) -> String {
        self.credits
            .map(|c| format!("    credits: {c}\n"))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The accounts, named `acct-1`, `acct-2`, ... in order.
    pub accounts: Vec<AccountSpec>,
    /// `MOCK_ACP_DELAY_MS` for the agents.
    pub delay_ms: u32,
    pub queue_timeout: &'static str,
    /// More top-level YAML for the process that runs the engine (e.g. `health:`).
    pub engine_yaml: String,
    /// Environment added to every process of the stack (e.g. `DRAWBRIDGE_LOG__...`).
    pub env: Vec<(String, String)>,
    /// More keys of the `gateway:` section (each line indented by two spaces), e.g.
    /// `"  rate_limit: { requests_per_minute: 5 }\n"`.
    pub gateway_yaml: String,
    /// More top-level YAML for the process that runs the gateway (e.g. `redis:`).
    pub gateway_top_yaml: String,
    /// More keys of the `worker:` section (each line indented by two spaces), e.g.
    /// `"  idle_timeout: 2s\n"`.
    pub worker_yaml: String,
    /// Turn the admin API on with [`ADMIN_TOKEN`] (the default).
    pub admin: bool,
    /// More entries of the `accounts:` list, after the mock-agent ones (each `  - id: ...`),
    /// e.g. provider accounts, which the engine serves.
    pub extra_accounts_yaml: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            accounts: vec![AccountSpec::new(3), AccountSpec::new(3)],
            delay_ms: 0,
            queue_timeout: "30s",
            engine_yaml: String::new(),
            env: Vec::new(),
            gateway_yaml: String::new(),
            gateway_top_yaml: String::new(),
            worker_yaml: String::new(),
            admin: true,
            extra_accounts_yaml: String::new(),
        }
    }
}

/// A running stack: `drawbridge` alone, or worker + engine + gateway as three processes.
pub struct Stack {
    pub dir: TempDir,
    pub processes: Vec<Process>,
    pub base_url: String,
    options: StackOptions,
}

/// The top-level `admin:` section, when the stack has an admin token.
fn gateway_admin(options: &StackOptions) -> String {
    if options.admin {
        format!("admin: {{ auth_token: {ADMIN_TOKEN} }}\n")
    } else {
        String::new()
    }
}

/// The `gateway:` keys every test stack has besides `listen`: the unlimited static key, the
/// data file in the stack's directory, and the caller's extra keys.
fn gateway_keys(dir: &Path, options: &StackOptions) -> String {
    format!(
        "  api_keys: [{{ name: test, key: {API_KEY}, rpm: 0 }}]\n  shutdown_grace: 20s\n  data_file: {}\n{}",
        dir.join("gateway.redb").display(),
        options.gateway_yaml
    )
}

fn accounts_yaml(options: &StackOptions) -> String {
    let agent = binary("mock-acp-agent");
    options
        .accounts
        .iter()
        .enumerate()
        .map(|(i, account)| {
            let mut env = format!("MOCK_ACP_DELAY_MS: \"{}\"", options.delay_ms);
            for (key, value) in &account.env {
                env.push_str(&format!(", {key}: \"{value}\""));
            }
            let args = serde_json::to_string(&account.args).unwrap_or_default();
            let extra: String = account
                .agent_yaml
                .iter()
                .map(|line| format!("      {line}\n"))
                .collect();
            format!(
                "  - id: acct-{}\n    pool_size: {}\n    models: [kiro]\n{}    agent:\n      command: {}\n      args: {args}\n      env: {{ {env} }}\n{extra}",
                i + 1,
                account.pool_size,
                account.credits_yaml(),
                agent.display(),
            )
        })
        .collect()
}

fn env(options: &StackOptions) -> Vec<(&str, &str)> {
    options
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn write(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write config");
    path
}

impl Stack {
    /// `drawbridge` alone.
    pub async fn single(options: StackOptions) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = format!(
            "node: {{ id: single }}\n\
             {}\
             gateway:\n  listen: 127.0.0.1:0\n{}\
             worker:\n  data_dir: {}\n  queue_timeout: {}\n  shutdown_grace: 20s\n{}\
             accounts:\n{}{}{}{}",
            gateway_admin(&options),
            gateway_keys(dir.path(), &options),
            dir.path().join("accounts").display(),
            options.queue_timeout,
            options.worker_yaml,
            accounts_yaml(&options),
            options.extra_accounts_yaml,
            options.engine_yaml,
            options.gateway_top_yaml,
        );
        let config = write(dir.path(), "drawbridge.yaml", &yaml);
        let process = Process::start("drawbridge", &config, &env(&options), &["gateway"]).await;
        let base_url = format!("http://{}", process.addr("gateway"));
        let stack = Stack {
            dir,
            processes: vec![process],
            base_url,
            options,
        };
        stack.wait_ready().await;
        stack
    }

    /// Stop the single-process stack gracefully and start it again on the same config and
    /// data (a new port: `base_url` changes).
    pub async fn restart_single(&mut self) {
        let mut process = self.processes.pop().expect("a running drawbridge");
        assert!(
            process.terminate().await.success(),
            "drawbridge did not stop cleanly:\n{}",
            process.log()
        );
        let config = self.dir.path().join("drawbridge.yaml");
        let process =
            Process::start("drawbridge", &config, &env(&self.options), &["gateway"]).await;
        self.base_url = format!("http://{}", process.addr("gateway"));
        self.processes.push(process);
        self.wait_ready().await;
    }

    /// Another gateway process of a three-process stack, on the first one's config (with
    /// `redis.url` in `gateway_top_yaml` they share keys, limits and usage). Its base URL.
    pub async fn add_gateway(&mut self) -> String {
        let config = self.dir.path().join("gateway.yaml");
        let gateway = Process::start(
            "drawbridge-gateway",
            &config,
            &env(&self.options),
            &["gateway"],
        )
        .await;
        let base_url = format!("http://{}", gateway.addr("gateway"));
        self.processes.push(gateway);
        base_url
    }

    /// The HOME of account `acct-N`'s agents.
    pub fn account_home(&self, n: usize) -> PathBuf {
        self.dir
            .path()
            .join("accounts")
            .join(format!("acct-{n}"))
            .join("home")
    }

    /// Every log line of the stack's processes, for checks that span them all.
    pub fn logs(&self) -> String {
        self.processes.iter().map(Process::log).collect()
    }

    /// A client of the admin API.
    pub fn admin(&self) -> Client {
        Client::new(self.base_url.clone(), Some(ADMIN_TOKEN))
    }

    /// `kiro-worker`, `drawbridge-engine` and `drawbridge-gateway` as separate processes.
    pub async fn three(options: StackOptions) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let worker_yaml = format!(
            "node: {{ id: worker-1 }}\n\
             worker:\n  http_listen: 127.0.0.1:0\n  grpc_listen: 127.0.0.1:0\n  data_dir: {}\n  queue_timeout: {}\n  shutdown_grace: 20s\n{}\
             accounts:\n{}{}",
            dir.path().join("accounts").display(),
            options.queue_timeout,
            options.worker_yaml,
            accounts_yaml(&options),
            options.extra_accounts_yaml,
        );
        let worker = Process::start(
            "kiro-worker",
            &write(dir.path(), "worker.yaml", &worker_yaml),
            &env(&options),
            &["grpc", "http"],
        )
        .await;
        let engine_yaml = format!(
            "node: {{ id: engine-1 }}\n\
             engine:\n  listen: 127.0.0.1:0\n  workers: [\"http://{}\"]\n  refresh_interval: 200ms\n  shutdown_grace: 20s\n  channel_keys: [{{ name: gateway, key: {CHANNEL_KEY}, trust_tenant: true }}]\n\
             accounts:\n{}{}{}",
            worker.addr("grpc"),
            accounts_yaml(&options),
            options.extra_accounts_yaml,
            options.engine_yaml
        );
        let engine = Process::start(
            "drawbridge-engine",
            &write(dir.path(), "engine.yaml", &engine_yaml),
            &env(&options),
            &["engine"],
        )
        .await;
        let gateway_yaml = format!(
            "node: {{ id: gateway-1 }}\n\
             {}\
             gateway:\n  listen: 127.0.0.1:0\n  engine_url: http://{}\n  engine_key: {CHANNEL_KEY}\n{}{}",
            gateway_admin(&options),
            engine.addr("engine"),
            gateway_keys(dir.path(), &options),
            options.gateway_top_yaml,
        );
        let gateway = Process::start(
            "drawbridge-gateway",
            &write(dir.path(), "gateway.yaml", &gateway_yaml),
            &env(&options),
            &["gateway"],
        )
        .await;
        let base_url = format!("http://{}", gateway.addr("gateway"));
        let stack = Stack {
            dir,
            processes: vec![worker, engine, gateway],
            base_url,
            options,
        };
        stack.wait_ready().await;
        stack
    }

    pub fn client(&self) -> Client {
        Client::new(self.base_url.clone(), Some(API_KEY))
    }

    /// Wait until every agent process is warm: `/health` reports all slots available.
    pub async fn wait_ready(&self) {
        let client = self.client();
        let ready = poll(Duration::from_secs(30), || async {
            let reply = client.get("/health").await;
            if reply.status != 200 {
                return false;
            }
            let health: Value = reply.json();
            let total = health["total_slots"].as_u64().unwrap_or(0);
            total > 0 && health["available_slots"].as_u64() == Some(total)
        })
        .await;
        if ready.is_none() {
            for p in &self.processes {
                eprintln!("---- log ----\n{}", p.log());
            }
            panic!("the stack did not become ready");
        }
    }

    /// Wait (up to 5 s) until some process of the stack has logged a line containing `needle`.
    pub async fn wait_for_log(&self, needle: &str) -> bool {
        let logged = || std::future::ready(self.processes.iter().any(|p| p.log().contains(needle)));
        poll(Duration::from_secs(5), logged).await.is_some()
    }

    /// [`Stack::count_log_lines`], exactly, once the sequence that writes them has ended: wait
    /// (up to 5 s) until there are at least `expected` and some process has logged a line with
    /// every one of `end` after the last of them. `end` must be a line that process writes only
    /// after every line of the sequence (e.g. `chat completion ended` of the request that
    /// caused them), so that a late duplicate would already be counted: the result can be more
    /// than `expected`, and the caller asserts it equal.
    pub async fn log_lines_once_ended(
        &self,
        needles: &[&str],
        expected: usize,
        end: &[&str],
    ) -> usize {
        let matches = |line: &str, all: &[&str]| all.iter().all(|n| line.contains(n));
        let ended = || {
            let ended = self.processes.iter().any(|p| {
                let log = p.log();
                let lines: Vec<&str> = log.lines().collect();
                let last = lines.iter().rposition(|l| matches(l, needles));
                last.is_some_and(|last| lines[last..].iter().any(|l| matches(l, end)))
            });
            std::future::ready(ended && self.count_log_lines(needles) >= expected)
        };
        let _ = poll(Duration::from_secs(5), ended).await;
        self.count_log_lines(needles)
    }

    /// The address of the engine's HTTP API (in the single binary, the one API).
    pub fn engine_url(&self) -> String {
        self.processes
            .iter()
            .find(|p| p.has_listener("engine"))
            .map_or_else(
                || self.base_url.clone(),
                |p| format!("http://{}", p.addr("engine")),
            )
    }

    /// The value of the engine's metric `name` (e.g. `drawbridge_failovers_total`), summed over
    /// the series whose labels include every one of `labels`; 0 when there is none.
    pub async fn engine_metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let reply = Client::new(self.engine_url(), None).get("/metrics").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let text = reply.text();
        text.lines()
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let rest = series.strip_prefix(name)?;
                let labelled = rest.is_empty() || rest.starts_with('{');
                let wanted = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                (labelled && wanted).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }

    /// How many log lines of the stack's processes contain every one of `needles`.
    pub fn count_log_lines(&self, needles: &[&str]) -> usize {
        self.processes
            .iter()
            .map(|p| {
                p.log()
                    .lines()
                    .filter(|line| needles.iter().all(|n| line.contains(n)))
                    .count()
            })
            .sum()
    }

    /// Pids of agent processes (anything running in the stack's account directories).
    pub fn agent_pids(&self) -> Vec<u32> {
        processes_under(self.dir.path())
    }

    /// Stop every process gracefully (front to back) and return whether each exited 0.
    pub async fn stop(&mut self) -> Vec<bool> {
        let mut ok = Vec::new();
        while let Some(mut process) = self.processes.pop() {
            ok.push(process.terminate().await.success());
        }
        ok
    }
}

/// A `kiro-worker` on its own, for the worker's HTTP surface.
pub struct WorkerUnderTest {
    pub dir: TempDir,
    pub process: Process,
    /// `http://127.0.0.1:PORT` of the worker's HTTP API.
    pub base_url: String,
}

impl WorkerUnderTest {
    /// Start a worker with `accounts_yaml` (the `accounts:` list, agent command written as
    /// `__AGENT__`) and extra `worker:` settings, then wait until every slot is warm.
    pub async fn start(worker_yaml: &str, accounts_yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts =
            accounts_yaml.replace("__AGENT__", &binary("mock-acp-agent").display().to_string());
        let yaml = format!(
            "node: {{ id: worker-under-test }}\n\
             worker:\n  http_listen: 127.0.0.1:0\n  grpc_listen: 127.0.0.1:0\n  data_dir: {}\n{worker_yaml}\n\
             accounts:\n{accounts}",
            dir.path().join("accounts").display(),
        );
        let config = write(dir.path(), "worker.yaml", &yaml);
        let process = Process::start("kiro-worker", &config, env, &["http", "grpc"]).await;
        let base_url = format!("http://{}", process.addr("http"));
        let worker = WorkerUnderTest {
            dir,
            process,
            base_url,
        };
        worker
            .wait_for_slots(|s| {
                s["accounts"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|a| a["idle"] == a["size"]))
            })
            .await;
        worker
    }

    pub fn client(&self) -> Client {
        Client::new(self.base_url.clone(), None)
    }

    /// Poll `/slots` until `ready` holds (deadline 20 s); returns the last report.
    pub async fn wait_for_slots(&self, ready: impl Fn(&Value) -> bool) -> Value {
        let client = self.client();
        let last = std::cell::RefCell::new(Value::Null);
        let found = poll(Duration::from_secs(20), || async {
            let slots = client.get("/slots").await.json();
            *last.borrow_mut() = slots.clone();
            ready(&slots).then_some(slots)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "/slots never reached the expected state; last: {}\nlog:\n{}",
                last.borrow(),
                self.process.log()
            )
        })
    }

    pub fn agent_pids(&self) -> Vec<u32> {
        processes_under(self.dir.path())
    }
}
