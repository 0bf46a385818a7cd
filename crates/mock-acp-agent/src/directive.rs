//! The directive grammar: `NAME key=value ...`, in prompts as `[[mock:NAME key=value ...]]`.
//!
//! Behaviours (what each does is in the crate docs' table): `echo`, `stream n=`,
//! `max_tokens n= rounds=`, `crash after=`, `hang after=`, `artifacts`, `refusal`, `env`,
//! `permission`, `thought n=`, `fs`, `noise`, `stats`, `quota after=`,
//! `rate_limit after= retry_after=`, `tools n=`, `shell`, `auth`, `model`,
//! `busy secs= every_ms=` (a long tool phase of non-text frames; `every_ms` must be > 0),
//! `call tool=NAME[,NAME...] args=JSON ask=0|1` (call the session's MCP server's tools; `tool`
//! is required, `args` a JSON object without whitespace, default `{}`).
//! Keys any behaviour takes: `delay_ms=`, `context=`, `credits=`, `v3=`, `input_tokens=`,
//! `output_tokens=`, `while=`. A tool-less custom agent answers `tools`, `shell` and `busy`
//! in text without running anything.

use std::str::FromStr;

const OPEN: &str = "[[mock:";
const CLOSE: &str = "]]";

/// What the agent does with a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behavior {
    /// Reply with the prompt text.
    #[default]
    Echo,
    /// `n` numbered chunks.
    Stream,
    /// `n` numbered chunks, then stop `max_tokens`.
    MaxTokens,
    /// `after` chunks, then exit with status 3.
    Crash,
    /// `after` chunks, then never answer.
    Hang,
    /// A reply with leaked internal markup split across chunks.
    Artifacts,
    /// One chunk, then stop `refusal`.
    Refusal,
    /// Reply with the agent's cwd and environment as JSON.
    Env,
    /// Ask the client for permission and reply with its answer.
    Permission,
    /// One thought chunk, then one message chunk.
    Thought,
    /// Ask the client for a file and a terminal and reply with its answers.
    Fs,
    /// Notifications the client must ignore, then `ok`.
    Noise,
    /// Reply with the agent's counters as JSON.
    Stats,
    /// `after` chunks, then answer the prompt with Kiro's "monthly usage limit" error.
    Quota,
    /// `after` chunks, then answer the prompt with a "too many requests" error (asking for
    /// `retry_after` seconds when given).
    RateLimit,
    /// `n` tool calls (announced, in progress, completed) before the prompt text is echoed.
    Tools,
    /// A shell tool: run without asking under v3 autopilot, else ask permission first.
    Shell,
    /// Ask the client for an access token (`_kiro/auth/getAccessToken`) and reply with its
    /// answer.
    Auth,
    /// Reply with the session's model.
    Model,
    /// A long tool phase: `secs` seconds of non-text frames (a tool call and its progress),
    /// then the prompt text as `echo`.
    Busy,
    /// Call tools of the session's first HTTP MCP server (all at once) and reply with their
    /// results, or answer from the `[Tool result (id ID)]` blocks of a transcript.
    Call,
}

impl Behavior {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "echo" => Self::Echo,
            "stream" => Self::Stream,
            "max_tokens" => Self::MaxTokens,
            "crash" => Self::Crash,
            "hang" => Self::Hang,
            "artifacts" => Self::Artifacts,
            "refusal" => Self::Refusal,
            "env" => Self::Env,
            "permission" => Self::Permission,
            "thought" => Self::Thought,
            "fs" => Self::Fs,
            "noise" => Self::Noise,
            "stats" => Self::Stats,
            "quota" => Self::Quota,
            "rate_limit" => Self::RateLimit,
            "tools" => Self::Tools,
            "shell" => Self::Shell,
            "auth" => Self::Auth,
            "model" => Self::Model,
            "busy" => Self::Busy,
            "call" => Self::Call,
            _ => return None,
        })
    }
}

/// A parsed directive: a behaviour and its keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Directive {
    /// The behaviour.
    pub behavior: Behavior,
    /// `n=`: how many chunks (`stream`, `max_tokens`).
    pub n: Option<u64>,
    /// `after=`: chunks before crashing or hanging.
    pub after: Option<u64>,
    /// `delay_ms=`: delay between chunks.
    pub delay_ms: Option<u64>,
    /// `context=`: reported context usage percentage.
    pub context: Option<f64>,
    /// `credits=`: reported credits.
    pub credits: Option<f64>,
    /// `v3=1`: report metering the Kiro v3 way.
    pub v3: bool,
    /// `rounds=`: with `max_tokens`, the answer is `rounds × n` chunks long and each turn gives
    /// `n` of them; a later directive-less prompt on the same session continues it.
    pub rounds: Option<u64>,
    /// `while=PATH`: the behaviour holds only while the file `PATH` exists; once it is gone
    /// the prompt is answered as `echo` (an agent that gets fixed).
    pub while_file: Option<String>,
    /// `retry_after=S`: with `rate_limit`, the seconds the error asks the client to wait.
    pub retry_after: Option<u64>,
    /// `input_tokens=`: report token usage (`usage_update` and the prompt result's `usage`)
    /// with this many input tokens.
    pub input_tokens: Option<u64>,
    /// `output_tokens=`: the output tokens of that report.
    pub output_tokens: Option<u64>,
    /// `secs=`: with `busy`, how long the tool phase lasts.
    pub secs: Option<u64>,
    /// `every_ms=`: with `busy`, the interval between its frames (default 500).
    pub every_ms: Option<u64>,
    /// `tool=A,B`: with `call`, the MCP tools to call (plain tool names, in order).
    pub tools: Vec<String>,
    /// `args=JSON`: with `call`, the arguments object every listed tool is called with.
    pub args: Option<serde_json::Map<String, serde_json::Value>>,
    /// `ask=1`: with `call`, ask `session/request_permission` before each call.
    pub ask: bool,
}

impl Directive {
    /// The directive in force now: this one, or `echo` once its `while=` file is gone.
    pub fn in_force(self) -> Directive {
        match &self.while_file {
            Some(path) if !std::path::Path::new(path).exists() => Directive::default(),
            _ => self,
        }
    }
}

/// A directive that does not parse.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum DirectiveError {
    /// Nothing where a behaviour name was expected.
    #[error("empty mock directive")]
    Empty,
    /// Not one of the behaviours.
    #[error("unknown mock behaviour `{0}`")]
    UnknownBehavior(String),
    /// A word that is not `key=value`.
    #[error("mock directive argument `{0}` is not key=value")]
    NotKeyValue(String),
    /// A key no behaviour takes.
    #[error("unknown mock directive key `{0}`")]
    UnknownKey(String),
    /// A key the behaviour needs is missing.
    #[error("mock directive `{behavior}` needs `{key}=`")]
    MissingKey {
        /// The behaviour.
        behavior: String,
        /// The missing key.
        key: String,
    },
    /// A value of the wrong type.
    #[error("bad value `{value}` for mock directive key `{key}`")]
    BadValue {
        /// The key.
        key: String,
        /// Its value.
        value: String,
    },
}

impl FromStr for Directive {
    type Err = DirectiveError;

    /// Parse `NAME key=value ...` (no brackets).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut words = spec.split_whitespace();
        let name = words.next().ok_or(DirectiveError::Empty)?;
        let behavior = Behavior::from_name(name)
            .ok_or_else(|| DirectiveError::UnknownBehavior(name.to_owned()))?;
        let mut directive = Self {
            behavior,
            ..Self::default()
        };
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| DirectiveError::NotKeyValue(word.to_owned()))?;
            let bad = || DirectiveError::BadValue {
                key: key.to_owned(),
                value: value.to_owned(),
            };
            let int = || value.parse::<u64>().map_err(|_| bad());
            let flag = || match value {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(bad()),
            };
            let float = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(bad)
            };
            match key {
                "n" => directive.n = Some(int()?),
                "after" => directive.after = Some(int()?),
                "delay_ms" => directive.delay_ms = Some(int()?),
                "context" => directive.context = Some(float()?),
                "credits" => directive.credits = Some(float()?),
                "rounds" => directive.rounds = Some(int()?),
                "retry_after" => directive.retry_after = Some(int()?),
                "input_tokens" => directive.input_tokens = Some(int()?),
                "output_tokens" => directive.output_tokens = Some(int()?),
                "secs" => directive.secs = Some(int()?),
                "every_ms" if value == "0" => return Err(bad()),
                "every_ms" => directive.every_ms = Some(int()?),
                "while" if value.is_empty() => return Err(bad()),
                "while" => directive.while_file = Some(value.to_owned()),
                "v3" => directive.v3 = flag()?,
                "ask" => directive.ask = flag()?,
                "tool" => {
                    let tools: Vec<String> = value.split(',').map(str::to_owned).collect();
                    if tools.iter().any(String::is_empty) {
                        return Err(bad());
                    }
                    directive.tools = tools;
                }
                "args" => {
                    directive.args = Some(serde_json::from_str(value).map_err(|_| bad())?);
                }
                _ => return Err(DirectiveError::UnknownKey(key.to_owned())),
            }
        }
        if directive.behavior == Behavior::Call && directive.tools.is_empty() {
            return Err(DirectiveError::MissingKey {
                behavior: name.to_owned(),
                key: "tool".to_owned(),
            });
        }
        Ok(directive)
    }
}

/// Cut every `[[mock:...]]` out of `text`; return the last one parsed (if any) and the rest of
/// the text. A `[[mock:` without a closing `]]` is ordinary text.
pub fn extract(text: &str) -> Result<(Option<Directive>, String), DirectiveError> {
    let (last, rest) = extract_at(text)?;
    Ok((last.map(|(directive, _)| directive), rest))
}

/// [`extract`], with where the last directive stood: its byte offset in the rest of the text
/// (what follows it there came after it in the prompt).
pub fn extract_at(text: &str) -> Result<(Option<(Directive, usize)>, String), DirectiveError> {
    let mut rest = String::with_capacity(text.len());
    let mut last = None;
    let mut remaining = text;
    while let Some(start) = remaining.find(OPEN) {
        let after_open = &remaining[start + OPEN.len()..];
        let Some(end) = after_open.find(CLOSE) else {
            break;
        };
        rest.push_str(&remaining[..start]);
        last = Some((after_open[..end].parse::<Directive>()?, rest.len()));
        remaining = &after_open[end + CLOSE.len()..];
    }
    rest.push_str(remaining);
    Ok((last, rest))
}

/// Split `text` into chunks of one word plus its trailing whitespace (leading whitespace is a
/// chunk of its own); the chunks concatenate back to `text` exactly.
pub fn word_chunks(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (index, ch) in text.char_indices() {
        let space = ch.is_whitespace();
        if in_space && !space {
            chunks.push(&text[start..index]);
            start = index;
        }
        in_space = space;
    }
    if start < text.len() {
        chunks.push(&text[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_keys() {
        let directive: Directive = "stream n=5 delay_ms=20".parse().unwrap();
        assert_eq!(
            directive,
            Directive {
                behavior: Behavior::Stream,
                n: Some(5),
                delay_ms: Some(20),
                ..Directive::default()
            }
        );
        let directive: Directive = "echo context=12.5 credits=0.5 v3=1".parse().unwrap();
        assert_eq!(directive.context, Some(12.5));
        assert_eq!(directive.credits, Some(0.5));
        assert!(directive.v3);
    }

    #[test]
    fn a_while_file_switches_the_behaviour_off_when_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("broken");
        std::fs::write(&flag, "").unwrap();
        let spec = format!("crash after=0 while={}", flag.display());
        let directive: Directive = spec.parse().unwrap();
        assert_eq!(directive.clone().in_force().behavior, Behavior::Crash);
        std::fs::remove_file(&flag).unwrap();
        assert_eq!(directive.in_force(), Directive::default());
        assert!(matches!(
            "echo while=".parse::<Directive>(),
            Err(DirectiveError::BadValue { .. })
        ));
    }

    #[test]
    fn account_errors_parse() {
        let directive: Directive = "rate_limit after=2 retry_after=30".parse().unwrap();
        assert_eq!(
            (directive.behavior, directive.after, directive.retry_after),
            (Behavior::RateLimit, Some(2), Some(30))
        );
        let directive: Directive = "quota".parse().unwrap();
        assert_eq!(directive.behavior, Behavior::Quota);
        let directive: Directive = "tools n=2 input_tokens=10 output_tokens=5".parse().unwrap();
        assert_eq!(
            (
                directive.behavior,
                directive.n,
                directive.input_tokens,
                directive.output_tokens
            ),
            (Behavior::Tools, Some(2), Some(10), Some(5))
        );
    }

    #[test]
    fn busy_parses() {
        let directive: Directive = "busy secs=2 every_ms=100".parse().unwrap();
        assert_eq!(
            (directive.behavior, directive.secs, directive.every_ms),
            (Behavior::Busy, Some(2), Some(100))
        );
        assert!(matches!(
            "busy every_ms=0".parse::<Directive>(),
            Err(DirectiveError::BadValue { .. })
        ));
    }

    #[test]
    fn call_parses() {
        let directive: Directive = r#"call tool=a,b args={"x":[1,"y"]} ask=1"#.parse().unwrap();
        assert_eq!(directive.behavior, Behavior::Call);
        assert_eq!(directive.tools, ["a", "b"]);
        assert_eq!(
            serde_json::Value::Object(directive.args.unwrap()),
            serde_json::json!({ "x": [1, "y"] })
        );
        assert!(directive.ask);
        let directive: Directive = "call tool=only".parse().unwrap();
        assert_eq!(
            (directive.tools.len(), directive.args, directive.ask),
            (1, None, false)
        );
        assert!(matches!(
            "call".parse::<Directive>(),
            Err(DirectiveError::MissingKey { .. })
        ));
        for bad in [
            "call tool=a,,b",
            "call tool=",
            "call tool=a args=[1]",
            "call tool=a args={",
            "call tool=a ask=2",
        ] {
            assert!(
                matches!(
                    bad.parse::<Directive>(),
                    Err(DirectiveError::BadValue { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn extract_at_tells_where_the_last_directive_stood() {
        let (last, rest) = extract_at("a [[mock:echo]]b [[mock:call tool=t]] c").unwrap();
        let (directive, at) = last.unwrap();
        assert_eq!(directive.behavior, Behavior::Call);
        assert_eq!(rest, "a b  c");
        assert_eq!(&rest[at..], " c");
        assert_eq!(extract_at("none").unwrap(), (None, "none".to_owned()));
    }

    #[test]
    fn rejects_bad_directives() {
        assert_eq!("".parse::<Directive>(), Err(DirectiveError::Empty));
        assert!(matches!(
            "dance".parse::<Directive>(),
            Err(DirectiveError::UnknownBehavior(_))
        ));
        assert!(matches!(
            "stream m=1".parse::<Directive>(),
            Err(DirectiveError::UnknownKey(_))
        ));
        assert!(matches!(
            "stream n=x".parse::<Directive>(),
            Err(DirectiveError::BadValue { .. })
        ));
        assert!(matches!(
            "stream n".parse::<Directive>(),
            Err(DirectiveError::NotKeyValue(_))
        ));
    }

    #[test]
    fn extract_removes_directives_and_the_last_wins() {
        let (directive, rest) = extract("a [[mock:stream n=2]]b[[mock:max_tokens n=1]] c").unwrap();
        assert_eq!(directive.unwrap().behavior, Behavior::MaxTokens);
        assert_eq!(rest, "a b c");
        let (directive, rest) = extract("plain [[mock:unclosed").unwrap();
        assert_eq!(directive, None);
        assert_eq!(rest, "plain [[mock:unclosed");
        assert!(extract("[[mock:nope]]").is_err());
    }

    #[test]
    fn word_chunks_round_trip() {
        for text in [
            "",
            "one",
            "hello world",
            "  leading and trailing  ",
            "multi\nline\n\ttext — ünïcødé 🦀 ok\n",
        ] {
            let chunks = word_chunks(text);
            assert_eq!(chunks.concat(), text);
            assert!(chunks.iter().all(|chunk| !chunk.is_empty()));
        }
        assert_eq!(word_chunks("a b  c\n"), ["a ", "b  ", "c\n"]);
        assert_eq!(word_chunks(" a"), [" ", "a"]);
    }
}
