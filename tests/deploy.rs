//! The deployment files (compose/, deploy/) cannot run here (no Docker engine, no cluster), so
//! they are checked by reading them: they parse, every file and service they reference exists,
//! and the Drawbridge configs they carry are valid for the roles that load them. The gateway's
//! socket activation (deploy/systemd) runs for real.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use drawbridge_config::{Config, Role};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize as _;
use serde_yaml::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn compose() -> Value {
    yaml(&repo().join("compose/docker-compose.yml"))
}

fn services(compose: &Value) -> BTreeSet<String> {
    compose["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| str_of(k).to_owned())
        .collect()
}

/// The stage names of a Dockerfile (`FROM image AS name`).
fn dockerfile_stages(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [from, _, as_, name]
                    if from.eq_ignore_ascii_case("FROM") && as_.eq_ignore_ascii_case("AS") =>
                {
                    Some((*name).to_owned())
                }
                _ => None,
            }
        })
        .collect()
}

fn config(path: &Path) -> Config {
    Config::load(path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
fn compose_builds_from_files_that_exist_and_targets_that_the_dockerfile_has() {
    let compose = compose();
    let dir = repo().join("compose");
    let mut built = BTreeSet::new();
    for (name, service) in compose["services"].as_mapping().unwrap() {
        let name = str_of(name);
        if let Some(build) = service.get("build") {
            let context = dir.join(str_of(&build["context"]));
            let dockerfile = context.join(str_of(&build["dockerfile"]));
            assert!(dockerfile.is_file(), "{name}: {dockerfile:?} is missing");
            let target = str_of(&build["target"]);
            assert!(
                dockerfile_stages(&dockerfile).contains(target),
                "{name}: the Dockerfile has no stage {target}"
            );
            built.insert(str_of(&service["image"]).to_owned());
        } else {
            let image = str_of(&service["image"]);
            assert!(
                !image.starts_with("drawbridge"),
                "{name} uses {image}, which no service builds"
            );
        }
        for volume in service
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let source = str_of(volume).split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(dir.join(source).exists(), "{name}: {source} is missing");
            } else {
                assert!(
                    compose["volumes"].get(source).is_some(),
                    "{name}: named volume {source} is not declared"
                );
            }
        }
        for dependency in service
            .get("depends_on")
            .map(|d| match d {
                Value::Sequence(s) => s.iter().map(|v| str_of(v).to_owned()).collect(),
                Value::Mapping(m) => m.keys().map(|k| str_of(k).to_owned()).collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default()
        {
            assert!(
                services(&compose).contains(&dependency),
                "{name} depends on {dependency}, which is no service"
            );
        }
    }
    for image in [
        "drawbridge-gateway:latest",
        "drawbridge-engine:latest",
        "drawbridge-worker:latest",
    ] {
        assert!(built.contains(image), "no service builds {image}");
    }
}

#[test]
fn the_worker_service_scales_it_has_no_fixed_name_port_or_id() {
    let compose = compose();
    let worker = &compose["services"]["kiro-worker"];
    assert!(worker.get("container_name").is_none());
    assert!(
        worker.get("ports").is_none(),
        "a published port would collide when scaled"
    );
    let env = worker.get("environment");
    assert!(
        env.is_none_or(|e| e.get("DRAWBRIDGE_NODE__ID").is_none()),
        "every replica would register under one id"
    );
}

#[test]
fn the_compose_config_is_valid_for_every_service_that_loads_it() {
    let config = config(&repo().join("compose/drawbridge.yaml"));
    for role in [Role::Gateway, Role::Engine, Role::Worker] {
        config
            .validate(role)
            .unwrap_or_else(|e| panic!("compose/drawbridge.yaml as {role:?}: {e}"));
    }
    // Replicas of the worker take their accounts from the leading engine, so scaling them
    // needs no config change.
    assert_eq!(
        config.cluster.assignment,
        drawbridge_config::AssignmentMode::Registry
    );
    let compose = compose();
    let names = services(&compose);
    // What the config points at must be services of the stack.
    let redis = config
        .redis
        .as_ref()
        .expect("the stack shares state in ValKey");
    assert!(redis.url.contains("//valkey:"), "{}", redis.url);
    assert!(names.contains("valkey"));
    let engine_host = config
        .gateway
        .engine_url
        .split("//")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(
        names.contains(engine_host),
        "gateway.engine_url → {engine_host}"
    );
    // The gateway publishes the port it listens on.
    let published = str_of(&compose["services"]["gateway"]["ports"][0]);
    assert!(published.ends_with(&format!(":{}", config.gateway.listen.port())));
}

#[test]
fn nginx_and_prometheus_point_at_services_of_the_stack() {
    let compose = compose();
    let names = services(&compose);
    let nginx = std::fs::read_to_string(repo().join("compose/nginx/nginx.conf")).unwrap();
    let upstreams: Vec<&str> = nginx
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter(|rest| !rest.starts_with('{'))
        .map(|s| s.split(':').next().unwrap())
        .collect();
    assert!(upstreams.len() >= 2, "{upstreams:?}");
    for host in upstreams {
        assert!(names.contains(host), "nginx upstream {host} is no service");
    }
    let prometheus = yaml(&repo().join("compose/prometheus/prometheus.yml"));
    for job in prometheus["scrape_configs"].as_sequence().unwrap() {
        for sc in job
            .get("static_configs")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            for target in sc["targets"].as_sequence().unwrap() {
                let host = str_of(target).split(':').next().unwrap();
                assert!(
                    names.contains(host),
                    "prometheus target {host} is no service"
                );
            }
        }
        for sd in job
            .get("dns_sd_configs")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            for name in sd["names"].as_sequence().unwrap() {
                assert!(names.contains(str_of(name)), "prometheus dns name {name:?}");
            }
        }
    }
}

#[test]
fn grafana_is_provisioned_with_the_dashboard() {
    let dir = repo().join("compose/grafana");
    let provider = yaml(&dir.join("provisioning/dashboards/drawbridge.yml"));
    let path = str_of(&provider["providers"][0]["options"]["path"]);
    let compose = compose();
    let mounts: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    let mount = mounts
        .iter()
        .find(|m| m.split(':').nth(1) == Some(path))
        .unwrap_or_else(|| panic!("nothing is mounted at {path}: {mounts:?}"));
    let host_dir = repo()
        .join("compose")
        .join(mount.split(':').next().unwrap());
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(host_dir.join("drawbridge.json")).unwrap())
            .unwrap();
    let datasource = yaml(&dir.join("provisioning/datasources/prometheus.yml"));
    let uid = str_of(&datasource["datasources"][0]["uid"]);
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    let exported = exported_series();
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("drawbridge_"));
            // Every series the dashboard plots is one the services export.
            for series in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("drawbridge_"))
            {
                assert!(
                    exported.contains(series),
                    "panel {}: no service exports {series} (exported: {exported:?})",
                    panel["title"]
                );
            }
        }
    }
}

/// The series names a gateway or engine exports, read from a real `Metrics` that has seen a
/// request of every kind and an account.
fn exported_series() -> std::collections::BTreeSet<String> {
    use drawbridge_telemetry::metrics::{Metrics, Rejection, RequestRecord};
    let metrics = Metrics::new();
    metrics.record_request(&RequestRecord {
        model: "kiro",
        dialect: "openai",
        error_code: Some("upstream_error"),
        duration: std::time::Duration::from_secs(1),
        first_token: Some(std::time::Duration::from_millis(10)),
        prompt_tokens: 1,
        completion_tokens: 1,
        usage: None,
    });
    metrics.record_rejection(Rejection::RateLimit);
    metrics.record_transition("a", "open");
    metrics.record_failover("retry");
    metrics.set_accounts(vec![drawbridge_types::AccountView {
        account: "a".into(),
        worker: "w".into(),
        models: vec!["kiro".into()],
        status: drawbridge_types::worker::AccountStatus::Healthy,
        slots: 1,
        busy: 0,
        queue_depth: 0,
        breaker: "closed".into(),
        credits: Some(1),
        last_error: None,
        draining: false,
        default_model: None,
        tools_refused: 0,
    }]);
    metrics
        .render()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_makefile_has_the_targets_the_product_page_names() {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    for target in [
        "build",
        "prepare-docker",
        "up",
        "up-multi",
        "up-monitoring",
        "down",
    ] {
        assert!(
            makefile
                .lines()
                .any(|l| l.starts_with(&format!("{target}:"))),
            "Makefile has no target {target}"
        );
    }
}

#[test]
fn kubernetes_manifests_parse_and_probe_health() {
    let dir = repo().join("deploy/kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let config = config(&dir.join("drawbridge.yaml"));
    for role in [Role::Gateway, Role::Engine, Role::Worker] {
        config
            .validate(role)
            .unwrap_or_else(|e| panic!("kubernetes config as {role:?}: {e}"));
    }
    for file in kustomization["configMapGenerator"][0]["files"]
        .as_sequence()
        .unwrap()
    {
        let file = str_of(file).rsplit('=').next().unwrap();
        assert!(dir.join(file).is_file(), "{file}");
    }
    let mut kinds = Vec::new();
    let mut services = BTreeSet::new();
    for resource in kustomization["resources"].as_sequence().unwrap() {
        for doc in yaml_docs(&dir.join(str_of(resource))) {
            let kind = str_of(&doc["kind"]).to_owned();
            if kind == "Service" {
                services.insert(str_of(&doc["metadata"]["name"]).to_owned());
            }
            if kind == "Deployment" || kind == "StatefulSet" {
                for container in doc["spec"]["template"]["spec"]["containers"]
                    .as_sequence()
                    .unwrap()
                {
                    let image = str_of(&container["image"]);
                    if image.starts_with("drawbridge") {
                        let probe = &container["readinessProbe"]["httpGet"];
                        assert_eq!(str_of(&probe["path"]), "/health", "{image}");
                        let ports: Vec<i64> = container["ports"]
                            .as_sequence()
                            .unwrap()
                            .iter()
                            .map(|p| p["containerPort"].as_i64().unwrap())
                            .collect();
                        let expected = match image {
                            "drawbridge-gateway:latest" => config.gateway.listen.port(),
                            "drawbridge-engine:latest" => config.engine.listen.port(),
                            "drawbridge-worker:latest" => config.worker.http_listen.port(),
                            other => panic!("unknown image {other}"),
                        };
                        assert!(ports.contains(&i64::from(expected)), "{image}: {ports:?}");
                    }
                }
            }
            kinds.push(kind);
        }
    }
    for kind in ["Deployment", "StatefulSet", "Service"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind}");
    }
    for host in ["valkey", "engine"] {
        assert!(services.contains(host), "no Service {host}");
    }
    assert!(config.redis.unwrap().url.contains("//valkey:"));
}

#[test]
fn systemd_units_start_our_binaries_and_the_gateway_socket_matches_its_service() {
    let dir = repo().join("deploy/systemd");
    let bins = ["drawbridge-gateway", "drawbridge-engine", "kiro-worker"];
    for (unit, bin) in [
        ("drawbridge-gateway.service", bins[0]),
        ("drawbridge-engine.service", bins[1]),
        ("kiro-worker@.service", bins[2]),
    ] {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
        assert!(exec.ends_with(&format!("/{bin}")), "{unit}: {exec}");
        assert!(
            text.contains("KillSignal=SIGTERM"),
            "{unit} must drain on SIGTERM"
        );
        assert!(
            test_support::process::binary(bin).is_file(),
            "{bin} is not built"
        );
    }
    let socket = std::fs::read_to_string(dir.join("drawbridge-gateway.socket")).unwrap();
    assert!(socket.contains("ListenStream="));
    let service = std::fs::read_to_string(dir.join("drawbridge-gateway.service")).unwrap();
    assert!(service.contains("Requires=drawbridge-gateway.socket"));
}

/// What systemd does for `drawbridge-gateway.socket`, done by a small Python launcher: bind and
/// listen, then exec the gateway with the socket as descriptor 3 and `LISTEN_FDS=1`. A client
/// that connects before the gateway is up waits in the backlog and is answered once it is: no
/// connection is refused across a (re)start.
#[tokio::test]
async fn the_gateway_serves_on_the_socket_systemd_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    // gateway.listen names a port the gateway must NOT bind: it takes the passed socket.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unused_port = unused.local_addr().unwrap().port();
    drop(unused);
    std::fs::write(
        &config,
        format!(
            "gateway:\n  listen: 127.0.0.1:{unused_port}\n  engine_url: http://127.0.0.1:9\n  api_keys: [{{ name: t, key: db-socket-activation-test-key }}]\n  data_file: {}\n",
            dir.path().join("gateway.redb").display()
        ),
    )
    .unwrap();
    let launcher = "import os, socket, sys\n\
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(128)\n\
        print(s.getsockname()[1], flush=True)\n\
        sys.stdin.readline()\n\
        os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n\
        os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())\n\
        os.execv(sys.argv[1], [sys.argv[1], '--config', sys.argv[2]])\n";
    let python = std::env::var("SDK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let gateway = test_support::process::binary("drawbridge-gateway");
    let mut child = tokio::process::Command::new(python)
        .args(["-c", launcher])
        .arg(&gateway)
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = stdout
        .next_line()
        .await
        .unwrap()
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Connect and send while nothing has accepted yet: the kernel queues the connection.
    let mut early = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    early
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer db-wrong\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Now let the launcher exec the gateway.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), early.read_to_string(&mut answer))
        .await
        .expect("the queued connection is answered once the gateway runs")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("invalid_api_key"), "{answer}");
    // The configured address stayed free: the gateway bound nothing itself.
    assert!(std::net::TcpListener::bind(("127.0.0.1", unused_port)).is_ok());
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("socket passed by the service manager"),
        "{stderr}"
    );
}
