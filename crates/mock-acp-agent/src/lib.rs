//! `mock-acp-agent`: a scripted ACP agent for tests and the demo.
//!
//! It speaks real ACP (protocol v1, JSON-RPC lines) on stdin/stdout with the official
//! `agent-client-protocol` crate, like `kiro-cli acp` does: stdout carries only ACP, logs go to
//! stderr (filter with `MOCK_ACP_LOG`, default `warn`). It answers `initialize`,
//! `authenticate` (always ok), `session/new` (a fresh UUID session id; the cwd is remembered),
//! `session/prompt` (the turn runs in its own task, streaming `session/update` chunks, then
//! answering with a stop reason) and `session/cancel` (the turn in progress stops and answers
//! `stopReason: "cancelled"`). It exits with status 0 when stdin reaches EOF.
//!
//! # Choosing a behaviour
//!
//! Each prompt picks its behaviour from, in order:
//!
//! 1. a directive in the prompt text, `[[mock:NAME key=value ...]]`. The last directive wins;
//!    every directive is cut out of the text (exactly the `[[...]]`, surrounding whitespace is
//!    kept) before the behaviour sees it;
//! 2. the environment variable `MOCK_ACP_BEHAVIOR`, same syntax without the brackets, e.g.
//!    `MOCK_ACP_BEHAVIOR="stream n=5 delay_ms=20"`;
//! 3. `echo`.
//!
//! An unknown behaviour, an unknown key or a bad value makes the prompt fail with JSON-RPC
//! "invalid params" (or, in `MOCK_ACP_BEHAVIOR`, makes the agent exit with status 2 at start).
//!
//! | Directive                  | Reply                                                         | Stop reason  |
//! |----------------------------|---------------------------------------------------------------|--------------|
//! | `echo`                     | the prompt text (directives removed) exactly, one chunk per word with its trailing whitespace | `end_turn` |
//! | `stream n=N delay_ms=D`    | N chunks `"chunk {i} "`, i from 0 (default n=3); asked to finish a cut-off answer (a prompt with an `[Assistant (cut off)]` block holding K chunks), it gives chunks K..N | `end_turn` |
//! | `max_tokens n=N`           | N chunks `"chunk {i} "` (default n=3)                         | `max_tokens` |
//! | `max_tokens n=N rounds=R`  | an answer of R×N chunks, N per turn: this turn gives chunks 0..N; each later prompt **on the same session without a directive** (a continuation request) gives the next N | `max_tokens`, `end_turn` on the last round |
//! | `crash after=N`            | N chunks, then "mock-acp-agent: crashing as asked" on stderr and exit status 3 (stdout flushed first) | none |
//! | `hang after=N`             | N chunks, then nothing ever again for this turn; cancel is ignored | none    |
//! | `artifacts`                | `Here is the answer.<thinking>internal reasoning</thinking> The result is 42.<tool_use>{"name":"fs_read"}</tool_use>`, chunks split inside the tags | `end_turn` |
//! | `refusal`                  | one chunk `I can't help with that.`                           | `refusal`    |
//! | `env`                      | one JSON object `{"cwd", "session_cwd", "home", "env": {sorted environment}}` | `end_turn` |
//! | `permission`               | asks `session/request_permission` (options `allow-once` / `reject-once`), replies `permission: <option id or cancelled>` | `end_turn` |
//! | `thought n=N`              | N `agent_thought_chunk`s `thinking...` (default 1), the turn's delay between them, then one chunk `done` | `end_turn`  |
//! | `fs`                       | asks `fs/read_text_file` and `terminal/create`, replies `fs/read_text_file: <ok or error CODE>; terminal/create: <ok or error CODE>` | `end_turn` |
//! | `noise`                    | unknown extension and `session/update` notifications, an update for another session, a `usage_update` (50 of 200), then one chunk `ok` | `end_turn` |
//! | `stats`                    | one JSON object `{"prompts", "prompt_bytes", "cancels", "active_turns"}` counted since start (`prompt_bytes`: the UTF-8 bytes of the text of every `session/prompt` received, **this stats prompt included**; `cancels`: `session/cancel` notifications received) | `end_turn` |
//! | `quota after=N`            | N chunks (default 0), then the prompt fails with JSON-RPC error -32603 `The monthly usage limit has been reached (request_id: mock)`, like a Kiro account whose credits are spent | error |
//! | `tools n=N`                | N tool calls (`tool_call` in progress, then `tool_call_update` completed; v2 announces each with `_kiro.dev/session/update` `tool_call_chunk`, v3 adds a `context_usage` progress frame), the turn's delay between frames, then the prompt text as `echo` | `end_turn` |
//! | `shell`                    | a shell tool call (`tool_call` `Running: ls`, kind `execute`, then `tool_call_update` `completed`, or `failed` when refused). Under v3 autopilot (on by default) it runs without asking; otherwise (v3 autopilot off, v2 always, plain) it asks `session/request_permission` (options `allow_once`, `reject_once`, `reject_always`, `_meta.kiro.consent`). Replies `shell: ran without asking`, `shell: allowed (OPTION)` or `shell: refused (OPTION, cancelled or error CODE); the command was not run` (plain mode: without `; the command was not run`) | `end_turn` |
//! | `busy secs=S every_ms=M`   | a long tool phase: for S seconds (default 1) only non-text frames, one every M ms (default 500): (v3: its `turn_start` first;) v2 `_kiro.dev/session/update` `tool_call_chunk`, a `tool_call` `Searching the workspace` (kind `search`, `in_progress`), then per tick (v2: a `tool_call_chunk` and) a `tool_call_update` `in_progress`, at the end one `completed`; then the prompt text as `echo` and the dialect's metering. A cancel ends it at once | `end_turn` (`cancelled`) |
//! | `auth`                     | asks the client `_kiro/auth/getAccessToken` (what v3 does without `--auth-method cli`), replies `auth: <ok or error CODE>` | `end_turn` |
//! | `model`                    | one chunk `model: <the session's model>` | `end_turn` |
//! | `rate_limit after=N retry_after=S` | N chunks (default 0), then the prompt fails with -32603 `Too many requests, please wait before trying again.` (plus ` Retry after S seconds.` when `retry_after` is given), like a rate-limited Kiro account | error |
//! | `call tool=A,B args=JSON ask=1` | calls tools of the session's MCP server at once and replies one line per listed tool; or, after a transcript's tool results, answers from them (see "MCP servers" below) | `end_turn` (`cancelled`) |
//!
//! A session whose custom agent has no built-in tools (`"tools": []`, or only MCP servers'
//! `@server` entries; see "Custom agents" below)
//! answers `tools`, `shell` and `busy` with the single chunk `I have no tools to run that.`
//! and `end_turn`: no tool call, no permission request.
//!
//! Keys every behaviour takes:
//!
//! - `delay_ms=D`: delay between chunks (default: `MOCK_ACP_DELAY_MS`, else 0). A cancel
//!   interrupts the delay.
//! - `context=F`: the context usage percentage reported (default `min(100, prompt_chars/2000)`).
//! - `credits=F`: the credits reported (default 0.01).
//! - `v3=1`: report metering the Kiro v3 way (below) instead of v2.
//! - `input_tokens=I output_tokens=O`: report token usage: a `usage_update` (`used` I+O of a
//!   200000-token window) before the answer, and `usage` (`totalTokens`, `inputTokens`,
//!   `outputTokens`) in the prompt result.
//! - `while=PATH`: the behaviour holds only while the file `PATH` exists; once it is gone the
//!   prompt is answered as `echo` (an account that gets fixed: its failures stop when the
//!   test removes the file). The path must not contain whitespace.
//!
//! # MCP servers
//!
//! The mock is a real MCP client (the official `rmcp` SDK, streamable HTTP), the way Kiro
//! loads the MCP servers a client hands it:
//!
//! - `initialize` announces `agentCapabilities.mcpCapabilities.http = true` (plain and v2:
//!   `sse` false; v3: `sse` true), or `http` false with `--no-mcp-http` (or
//!   `MOCK_ACP_MCP_HTTP=0`).
//! - `session/new` keeps its `mcpServers`' `http` entries `{"type": "http", "name", "url",
//!   "headers": [{"name", "value"}]}` for the session (none when HTTP is switched off); stdio
//!   and `sse` entries are ignored. An `http` or `sse` entry without a `headers` array is
//!   refused like claude-agent-acp does: JSON-RPC -32602 with data `headers: expected array`
//!   (without `name` or `url` strings: `name: expected string`, `url: expected string`).
//! - `call tool=NAME[,NAME...] args=JSON ask=0|1` (`args`: a JSON object without whitespace
//!   or `]]`, default `{}`, the same for every tool): connects to the session's first HTTP
//!   server with its headers (`initialize`, `tools/list`). For each listed tool the server
//!   offers it sends a `tool_call` (`pending`, kind `other`, title `mcp__<server>__<tool>`,
//!   `rawInput` the args), with `ask=1` then asks `session/request_permission` (options
//!   `allow_once`, `reject_once`; anything but an `allow` option refuses: `tool_call_update`
//!   `failed`), then `tool_call_update` `in_progress`. It sends every allowed `tools/call`
//!   (the plain tool name, the args) and waits for all the answers with no time limit; a
//!   `session/cancel` stops the wait (the server gets `notifications/cancelled` for each
//!   call) and answers `cancelled`. Then a `tool_call_update` `completed` (or `failed`) per
//!   call, and the reply, one line per listed tool in order (lines joined by `\n`):
//!   `NAME: TEXT` (the result's text contents, concatenated), `NAME failed: TEXT` (a result
//!   with `isError`, or the call's error), `no tool NAME offered` (not called),
//!   `permission refused for NAME` (not called). A session without an HTTP server replies
//!   `no MCP server`, unless the prompt describes tools in text and asks for tagged calls (it
//!   contains `<tool_call>`: a gateway's emulated tool calling): then the reply is one
//!   `<tool_call>{"name":NAME,"arguments":ARGS}</tool_call>` line per listed tool. A server
//!   that cannot be reached or listed replies `MCP server NAME failed: ERROR`.
//! - Transcript mode: when the prompt text after the `call` directive holds blocks headed
//!   `[Tool result (id ID)]` (a header line, as Drawbridge renders earlier tool results), no
//!   tool is called: the reply is one `result ID: TEXT` per block, TEXT being the block's
//!   text up to the next blank line followed by `[`, or the end.
//!
//! # Metering
//!
//! After every turn except `crash`, `hang`, `quota` and `rate_limit`, before the prompt's answer, the agent reports
//! usage like `kiro-cli` does. Kiro v2 (the default): the notification `_kiro.dev/metadata`
//! `{"sessionId", "contextUsagePercentage", "meteringUsage": [{"value", "unit": "credit"}],
//! "turnDurationMs"}`. Kiro v3 (`v3=1`): two `session_info_update`s, one whose `_meta.kiro` is
//! `{"kind": "turn_completion", "promptTurnSummaries": [{"usage", "unit": "credit"}]}` and one
//! with `{"kind": "context_usage", "usagePercentage"}`.
//!
//! # Kiro dialects
//!
//! `--kiro-engine v2|v3` (or kiro-cli's own `--agent-engine`, or `MOCK_ACP_KIRO_ENGINE`) makes
//! the mock speak like `kiro-cli acp` 2.22 on that engine; without it the mock answers as
//! before (plain ACP, `agentInfo` `mock-acp-agent`). kiro-cli's own flags are understood
//! (`--flag value` or `--flag=value`), anything else is ignored, so a kiro-cli command line
//! (`acp --agent-engine v3 --auth-method cli`) runs the mock too:
//!
//! - `--auth-method cli` (v3; or `MOCK_ACP_AUTH_METHOD=cli`): the agent never asks for a
//!   token. **Without it a v3 agent,
//!   like real v3, sends the client `_kiro/auth/getAccessToken {sessionId}` before answering
//!   a prompt**; a result (any) lets the turn go on and later turns stop asking; an error
//!   stalls the turn: nothing more is sent for it and the prompt is never answered until a
//!   `session/cancel` (then `stopReason: "cancelled"`, no metering). Start v3 mocks with
//!   `--auth-method cli` unless the test is about this.
//! - `--agent NAME` (v2): every session runs the custom agent `$HOME/.kiro/agents/NAME.json`
//!   (its `currentModeId`). A missing, unreadable or non-JSON file: a line on stderr naming
//!   the file and exit status 2 before serving.
//! - `--model ID` (v2): the sessions' initial model.
//! - `--agent`, `--model` and `--trust-all-tools` make a v3 mock print `error: the v3 engine
//!   does not accept ...` on stderr and exit with status 2, like real v3. Plain mode ignores
//!   them all.
//!
//! - `initialize`: v2 `agentInfo` "Kiro CLI Agent" 2.22.0, `mcpCapabilities.http`; v3 no
//!   `agentInfo`, http+sse, `sessionCapabilities.list`, `authMethods`, and
//!   `_meta.kiro.extensionMethods` (with `_kiro/session/delete`).
//! - `session/new`: v2 `sessionId` (a UUID), `modes`, `models {currentModelId,
//!   availableModels: [{modelId, name, description}]}`; v3 `sessionId` `sess_<uuid>`, `modes`,
//!   `configOptions` (`model` with the catalogue as options, `mode`, `autopilot` on), `_meta`,
//!   after the extension notifications `_kiro/mcp/status`, `_kiro/governance/state`,
//!   `_kiro/tools/didChange`, `_kiro/powers/items_changed`, `_kiro/steering/documents_changed`
//!   and an `available_commands_update`. v3 writes `$HOME/.kiro/sessions/<id>.json`.
//!   `--cold-catalogue` (or `MOCK_ACP_COLD_CATALOGUE=1`): the first session has no models.
//! - The catalogue: `MOCK_ACP_MODELS=a,b,c` (the first is the default), else
//!   claude-sonnet-5, claude-sonnet-4.6, claude-opus-4.8, gpt-5.6-luna, claude-haiku-4.5.
//! - Model choice: v2 `session/set_model {sessionId, modelId}` takes any id (an unknown one
//!   fails the next prompt with -32603 `Model 'ID' not found`); v3 answers it with an error and
//!   takes `session/set_config_option {sessionId, configId, value}` for `model` (a catalogue
//!   id), `mode` and `autopilot` (`on`/`off`), answering the new `configOptions`. The
//!   `model` directive shows the session's model; with `--echo-model` (or
//!   `MOCK_ACP_ECHO_MODEL=1`) every `echo` answer starts with `[MODEL] `.
//! - v3 `_kiro/session/delete {sessionId}` forgets the session, removes its file and answers
//!   `{"success": true}`; v2 does not know the method.
//! - Turns: v3 sends `session_info_update` `turn_start` first, and after the metering
//!   `turn_end` (`stopReason`); its metering is always the v3 shape.
//!
//! # Custom agents
//!
//! An agent file is `$HOME/.kiro/agents/NAME.json`, `{"name", "description", "prompt",
//! "tools": [], "mcpServers": {}, "includeMcpJson": false}` (see [`CustomAgent`]); only
//! `tools` without built-in entries (tool-less: `[]` or only `@server` names) changes what the
//! mock does.
//!
//! - v2: chosen with `--agent NAME` (above).
//! - v3: `session/new` lists in `modes.availableModes` (and the `mode` config option) the
//!   built-in `kiro_default` and `kiro_planner`, then one mode per agent file (id = its
//!   `name`, else the file name; sorted; read afresh for every session; a file containing
//!   `"allowedTools": []` is silently left out, like v3 does), then the request's inline
//!   agents `_meta.kiro.customAgents: [{id, prompt, tools, description?}]` (id = mode id; an
//!   inline agent replaces a file of the same name; it belongs to that session only).
//! - `session/set_mode {sessionId, modeId}` (both dialects) switches the session's agent
//!   (a built-in mode: no custom agent); it sends `session/update` `current_mode_update
//!   {currentModeId}` and answers `{}`; an unknown mode is JSON-RPC -32602.
//!   `session/set_config_option` `mode` does the same without the notification.
//!
//! # Start-up knobs
//!
//! - `MOCK_ACP_FAIL_START=<message>`: print the message to stderr (e.g. `You are not logged
//!   in`) and exit with status 1 before reading anything.
//! - `MOCK_ACP_START_DELAY_MS=<ms>`: sleep before serving.
//! - `MOCK_ACP_DELAY_MS=<ms>`: the default delay between chunks.
//! - `--no-mcp-http` or `MOCK_ACP_MCP_HTTP=0`: no HTTP MCP servers (see "MCP servers").

mod agent;
pub mod custom_agent;
pub mod directive;
mod kiro;
mod mcp;

pub use agent::{MockConfig, serve};
pub use custom_agent::{AgentFileError, CustomAgent};
pub use directive::{Behavior, Directive, DirectiveError};
pub use kiro::{DEFAULT_MODELS, KiroEngine};
