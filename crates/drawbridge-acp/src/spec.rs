//! What to run: command, arguments, directory and the child's whole environment.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// How to start one agent process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentSpec {
    /// The program, e.g. `kiro-cli`; looked up in the child's `PATH` unless it contains a `/`
    /// (a relative path is taken from the parent's working directory, not `cwd`). No shell.
    pub command: String,
    /// Its arguments, e.g. `["acp"]`.
    pub args: Vec<String>,
    /// The child's working directory, also the `cwd` sent in `session/new`.
    pub cwd: PathBuf,
    /// Extra environment. The child's whole environment is a minimal base (`PATH`, `LANG` when
    /// the parent has them, `HOME`), then the `home` variables, then these (which win). Nothing
    /// else leaks from the parent (no `KIRO_*`, no `AWS_*`).
    pub env: BTreeMap<String, String>,
    /// A private home for the child (one per account): sets `HOME`, `XDG_DATA_HOME`
    /// (`home/.local/share`), `XDG_CONFIG_HOME` (`home/.config`) and `XDG_RUNTIME_DIR`
    /// (`home/.run`, mode 0700), creating the directories.
    pub home: Option<PathBuf>,
}

impl AgentSpec {
    /// A spec running `command args...` in `cwd` with the base environment only.
    pub fn new(
        command: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
        cwd: impl Into<PathBuf>,
    ) -> Self {
        Self {
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
            cwd: cwd.into(),
            env: BTreeMap::new(),
            home: None,
        }
    }

    /// The child's complete environment, given how to read the parent's.
    pub(crate) fn child_env(
        &self,
        parent: impl Fn(&str) -> Option<String>,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for key in ["PATH", "LANG", "HOME"] {
            if let Some(value) = parent(key) {
                env.insert(key.to_owned(), value);
            }
        }
        if let Some(home) = &self.home {
            let dirs = HomeDirs::new(home);
            env.insert("HOME".to_owned(), path_string(home));
            env.insert("XDG_DATA_HOME".to_owned(), path_string(&dirs.data));
            env.insert("XDG_CONFIG_HOME".to_owned(), path_string(&dirs.config));
            env.insert("XDG_RUNTIME_DIR".to_owned(), path_string(&dirs.runtime));
        }
        env.extend(self.env.clone());
        env
    }

    /// Create the home's directories (runtime dir 0700). A handful of `mkdir`s at process
    /// start: done synchronously.
    pub(crate) fn prepare_home(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        let Some(home) = &self.home else {
            return Ok(());
        };
        let dirs = HomeDirs::new(home);
        for dir in [home, &dirs.data, &dirs.config] {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dirs.runtime)?;
        // An existing runtime dir keeps its mode under a recursive create: force it.
        std::fs::set_permissions(&dirs.runtime, std::fs::Permissions::from_mode(0o700))
    }
}

struct HomeDirs {
    data: PathBuf,
    config: PathBuf,
    runtime: PathBuf,
}

impl HomeDirs {
    fn new(home: &Path) -> Self {
        Self {
            data: home.join(".local").join("share"),
            config: home.join(".config"),
            runtime: home.join(".run"),
        }
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Find the program to run: as given when it contains a `/`, else the first executable file
/// named `command` in `path` (the child's `PATH`).
pub(crate) fn resolve_command(command: &str, path: Option<&OsStr>) -> std::io::Result<PathBuf> {
    if command.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ));
    }
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    let found = path
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable(candidate));
    found.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{command}` not found in PATH"),
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(key: &str) -> Option<String> {
        match key {
            "PATH" => Some("/usr/bin:/bin".to_owned()),
            "HOME" => Some("/home/parent".to_owned()),
            "KIRO_API_KEY" => Some("leak".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn base_env_is_minimal() {
        let spec = AgentSpec::new("kiro-cli", ["acp"], "/tmp");
        let env = spec.child_env(parent);
        assert_eq!(
            env.keys().map(String::as_str).collect::<Vec<_>>(),
            ["HOME", "PATH"]
        );
        assert_eq!(env["HOME"], "/home/parent");
    }

    #[test]
    fn home_sets_xdg_and_explicit_env_wins() {
        let mut spec = AgentSpec::new("kiro-cli", ["acp"], "/tmp");
        spec.home = Some(PathBuf::from("/accounts/a"));
        spec.env
            .insert("XDG_CONFIG_HOME".to_owned(), "/elsewhere".to_owned());
        spec.env.insert("RUST_LOG".to_owned(), "debug".to_owned());
        let env = spec.child_env(parent);
        assert_eq!(env["HOME"], "/accounts/a");
        assert_eq!(env["XDG_DATA_HOME"], "/accounts/a/.local/share");
        assert_eq!(env["XDG_RUNTIME_DIR"], "/accounts/a/.run");
        assert_eq!(env["XDG_CONFIG_HOME"], "/elsewhere");
        assert_eq!(env["RUST_LOG"], "debug");
        assert!(!env.contains_key("KIRO_API_KEY"));
    }

    #[test]
    fn resolves_through_path() {
        let path = std::env::join_paths(["", "/nonexistent", "/bin", "/usr/bin"]).unwrap();
        let sh = resolve_command("sh", Some(&path)).unwrap();
        assert!(sh.ends_with("sh"));
        assert!(sh.is_absolute());
        let missing = resolve_command("surely-not-a-command-xyz", Some(&path)).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(resolve_command("./x", None).unwrap(), PathBuf::from("./x"));
        assert!(resolve_command("", Some(&path)).is_err());
    }
}
