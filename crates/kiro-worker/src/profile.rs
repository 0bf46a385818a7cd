//! The tool-less agent profile a Kiro account runs with `agent.tools: none`.
//!
//! Kiro agents come with built-in tools (shell, file writes, web) that run on the worker's host;
//! a gateway must not let a client's prompt talk a model into using them. Kiro takes custom
//! agents from `~/.kiro/agents/NAME.json`: one whose `tools` name only the MCP server
//! `@drawbridge` and that has no MCP servers of its own has no tools but the client's, which
//! the worker serves to a session (as MCP server `drawbridge`) when a request brings them.
//! Kiro v2 runs it with `--agent NAME`; Kiro v3 lists it as a session mode
//! (`session/set_mode`). v3 silently drops a file containing `"allowedTools": []`, so the
//! profile leaves that key out.

use std::io;
use std::path::{Path, PathBuf};

/// The profile's name: its file name, v2's `--agent` value and v3's mode id.
pub(crate) const PROFILE_NAME: &str = "drawbridge";

/// The profile's JSON.
pub(crate) fn profile() -> serde_json::Value {
    serde_json::json!({
        "name": PROFILE_NAME,
        "description": "Drawbridge gateway agent: answers in text, with only the client's tools.",
        "prompt": "You answer the user's request directly in text. You cannot run commands, \
                   read or write files, or browse the web; use only the tools a request offers.",
        "tools": [format!("@{}", drawbridge_acp::CLIENT_TOOLS_SERVER)],
        "mcpServers": {},
        "includeMcpJson": false,
    })
}

/// Where the profile lives in an account's `home`.
pub(crate) fn profile_path(home: &Path) -> PathBuf {
    home.join(".kiro")
        .join("agents")
        .join(format!("{PROFILE_NAME}.json"))
}

/// Write the profile into `home` unless it is there already, as written (several slots of a
/// pool start at once: the file is replaced atomically, never seen half-written).
pub(crate) fn write_profile(home: &Path) -> io::Result<PathBuf> {
    let path = profile_path(home);
    let text = serde_json::to_string_pretty(&profile()).map_err(io::Error::other)?;
    if std::fs::read_to_string(&path).is_ok_and(|existing| existing == text) {
        return Ok(path);
    }
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("the profile path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(
        ".{PROFILE_NAME}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&temp, &text)?;
    std::fs::rename(&temp, &path)?;
    Ok(path)
}

/// Whether the operator's launch arguments already choose an agent (`--agent NAME` or
/// `--agent=NAME`): then the operator's choice stands.
pub(crate) fn names_agent(args: &[String]) -> bool {
    args.iter()
        .any(|arg| arg == "--agent" || arg.starts_with("--agent="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_has_only_the_clients_tools_and_no_mcp_of_its_own() {
        let profile = profile();
        assert_eq!(profile["name"], PROFILE_NAME);
        assert_eq!(profile["tools"], serde_json::json!(["@drawbridge"]));
        assert_eq!(profile["mcpServers"], serde_json::json!({}));
        assert_eq!(profile["includeMcpJson"], false);
        assert!(
            profile.get("allowedTools").is_none(),
            "v3 drops such a file"
        );
        assert!(profile["prompt"].as_str().is_some_and(|p| !p.is_empty()));
    }

    #[test]
    fn the_profile_is_written_once_into_the_home() {
        let home = tempfile::tempdir().unwrap();
        let path = write_profile(home.path()).unwrap();
        assert_eq!(path, home.path().join(".kiro/agents/drawbridge.json"));
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written, profile());
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        write_profile(home.path()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified
        );
        let entries = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(entries, 1, "no temporary file left");
    }

    #[test]
    fn an_agent_named_by_the_operator_stands() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(names_agent(&args(&["acp", "--agent", "mine"])));
        assert!(names_agent(&args(&["acp", "--agent=mine"])));
        assert!(!names_agent(&args(&["acp", "--agent-engine", "v2"])));
        assert!(!names_agent(&args(&["acp"])));
    }
}
