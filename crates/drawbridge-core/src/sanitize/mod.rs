//! Output sanitization: strip what an agent leaks into its answer, on a stream.
//!
//! Three modes (`sanitize.mode` in the config):
//!
//! - [`SanitizeMode::Identity`]: pass everything through. [`Sanitizer::push`] returns the chunk
//!   it was given, borrowed: no copy, no holdback.
//! - [`SanitizeMode::Xml`]: strip internal XML blocks (tags and content), if `strip_xml_tags`.
//! - [`SanitizeMode::Full`]: the XML layer (if `strip_xml_tags`), built-in tool markers (if
//!   `strip_builtin_tools`) and identity metadata lines (always).
//!
//! A mode whose layers are all switched off behaves exactly as `Identity`
//! ([`Sanitizer::is_identity`]).
//!
//! # XML layer
//!
//! The internal blocks are [`INTERNAL_TAGS`]: `thinking`, `antThinking`, `reasoning`,
//! `tool_use`, `tool_result`, `function_calls`, `invoke`, `function_results`,
//! `system-reminder` (names are case-sensitive). For each:
//!
//! - `<NAME>` or `<NAME ATTRIBUTES>` (whitespace after the name, then anything but `<` up to
//!   the first `>`) opens a block; the tag, everything up to the first `</NAME>` and that
//!   closing tag are dropped. Quotes in attributes are not special.
//! - `<NAME/>` and `<NAME ATTRIBUTES/>` are dropped; so is a stray `</NAME>`.
//! - Anything else starting with `<` is text: `a < b`, `Vec<T>`, `<div>`, `<thinkingcap>`,
//!   `</ thinking>`.
//! - Nothing is stripped inside Markdown code: a fenced block (a line starting, after at most
//!   three spaces, with three or more `` ` `` or `~`, closed by a line of at least as many of
//!   the same character and nothing else) or an inline code span (a run of backticks up to the
//!   next run of the same length on the same line). Code context is tracked on the text that is
//!   emitted, so a fence inside a dropped block does not count.
//! - Limits: a block ends at the first `</NAME>`, so a block nested in one of the same name
//!   ends early (its outer closing tag is then dropped as a stray one, but the text between the
//!   two closing tags is emitted); an opening tag longer than [`MAX_TAG_BYTES`] is text.
//!
//! # Line markers (Full mode)
//!
//! A line is dropped, with its line break, when after at most [`MAX_MARKER_INDENT`] bytes of
//! spaces or tabs it starts with one of these prefixes:
//!
//! - built-in tool markers (`strip_builtin_tools`): `🛠️ Using tool:` (with or without the
//!   variation selector U+FE0F, one or two spaces), `● Running tool `, `● Using tool `,
//!   `● Completed in `, `[Tool uses: `;
//! - identity metadata: `> Kiro is `, `▸ Credits: `, `▸ Time: `;
//!
//! or when the whole line (trailing spaces, tabs and `\r` aside, at most
//! [`MAX_MARKER_INDENT`] bytes of them) is `⋮` (a tool marker) or one of the identity lines
//! `I am Kiro`, `I am Kiro.`, `I'm Kiro`, `I'm Kiro.`. Prose that merely mentions Kiro is
//! kept. Lines inside a fenced code block are never dropped.
//!
//! # Holdback
//!
//! Text is held back only while it could still become something that is stripped:
//!
//! - after a `<` (outside code) until the tag is decided: at most [`MAX_TAG_BYTES`] bytes;
//! - at the start of a line (Full mode with line markers, outside a fenced block) while the
//!   line could still be a marker: at most the indent, the longest marker and its trailing
//!   whitespace, under [`MAX_TAG_BYTES`] too.
//!
//! So after every [`Sanitizer::push`] at most [`MAX_HOLDBACK`] bytes are held
//! ([`Sanitizer::held_bytes`]). The content of an open internal block is dropped as it comes,
//! not held. Text is handled char by char, so a UTF-8 character is never split.
//!
//! # End of stream
//!
//! [`Sanitizer::finish`] emits what is held: a partial or unterminated tag (`<`, `<thin`,
//! `<invoke name="x"`) is text; an unterminated internal block (`<thinking>…` with no close)
//! is dropped to the end; a held line that turned out to be a whole-line marker is dropped.
//!
//! The output does not depend on how the input is split into chunks.

use std::borrow::Cow;

/// Which layers of sanitization run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SanitizeMode {
    /// Pass through unchanged.
    Identity,
    /// Strip internal XML blocks.
    Xml,
    /// Strip internal XML blocks, built-in tool markers and identity metadata.
    #[default]
    Full,
}

/// The sanitizer's settings: the mode, and switches to turn a layer of it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanitizeOptions {
    pub mode: SanitizeMode,
    /// The XML layer (Xml and Full modes).
    pub strip_xml_tags: bool,
    /// The built-in tool markers (Full mode).
    pub strip_builtin_tools: bool,
}

impl Default for SanitizeOptions {
    fn default() -> Self {
        Self {
            mode: SanitizeMode::Full,
            strip_xml_tags: true,
            strip_builtin_tools: true,
        }
    }
}

/// The internal blocks the XML layer strips, by tag name.
pub const INTERNAL_TAGS: [&str; 9] = [
    "thinking",
    "antThinking",
    "reasoning",
    "tool_use",
    "tool_result",
    "function_calls",
    "invoke",
    "function_results",
    "system-reminder",
];

/// The longest opening tag (with its attributes) the XML layer recognises, in bytes.
pub const MAX_TAG_BYTES: usize = 128;

/// The most indentation (spaces, tabs) before a line marker, and the most trailing whitespace
/// after a whole-line marker, in bytes.
pub const MAX_MARKER_INDENT: usize = 8;

/// The most text a [`Sanitizer`] holds back between two calls, in bytes.
pub const MAX_HOLDBACK: usize = MAX_TAG_BYTES;

mod markdown;
mod patterns;

use markdown::Markdown;
pub(crate) use markdown::ends_inside_code_fence;
use patterns::{Layers, LineMatch, TagMatch, close_tag_char, line_match, tag_match};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Ordinary text.
    Text,
    /// `held` starts with `<`: deciding whether it is an internal tag.
    Tag,
    /// `held` is the start of a line: deciding whether it is a marker line.
    Line,
    /// Dropping the rest of a marker line, up to and including its `\n`.
    DropLine,
    /// Inside an internal block `name`, dropping it; `matched` chars of `</name>` seen.
    Block { name: &'static str, matched: usize },
}

/// A streaming sanitizer: feed it the chunks of one answer with [`push`](Self::push), then
/// call [`finish`](Self::finish) once. The concatenated outputs are the same however the
/// answer is split into chunks.
#[derive(Debug, Clone)]
pub struct Sanitizer {
    options: SanitizeOptions,
    layers: Layers,
    mode: Mode,
    /// Text held back while undecided (`Tag` and `Line` modes).
    held: String,
    /// Chars to process before the next input char (held text being replayed).
    replay: Vec<char>,
    /// Markdown code context of the text emitted so far.
    md: Markdown,
    /// The current line has been checked for markers (or cannot be one).
    line_checked: bool,
}

impl Sanitizer {
    pub fn new(options: SanitizeOptions) -> Self {
        Self {
            options,
            layers: Layers::of(options),
            mode: Mode::Text,
            held: String::new(),
            replay: Vec::new(),
            md: Markdown::default(),
            line_checked: false,
        }
    }

    /// Whether this sanitizer passes everything through unchanged (Identity mode, or every
    /// layer switched off). Callers may then skip it altogether; `push` is free either way.
    pub fn is_identity(&self) -> bool {
        self.layers.none()
    }

    /// Feed the next chunk; returns the text that is safe to emit now. When
    /// [`is_identity`](Self::is_identity), that is `chunk` itself, borrowed.
    pub fn push<'a>(&mut self, chunk: &'a str) -> Cow<'a, str> {
        if self.is_identity() {
            return Cow::Borrowed(chunk);
        }
        let mut out = String::with_capacity(chunk.len());
        for c in chunk.chars() {
            self.replay.push(c);
            self.drain(&mut out);
        }
        Cow::Owned(out)
    }

    /// End of the stream: returns what was held back and still belongs in the output (see
    /// the module docs), and resets the sanitizer for a new stream.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        loop {
            match self.mode {
                Mode::Tag => {
                    self.not_a_tag(&mut out);
                    self.drain(&mut out);
                }
                Mode::Line => {
                    if line_match(&self.held, self.layers, true) == LineMatch::Keep {
                        self.not_a_marker();
                        self.drain(&mut out);
                    } else {
                        self.held.clear();
                        self.mode = Mode::Text;
                    }
                }
                Mode::Text | Mode::DropLine | Mode::Block { .. } => break,
            }
        }
        *self = Self::new(self.options);
        out
    }

    /// How many bytes are held back now (at most [`MAX_HOLDBACK`] between calls).
    pub fn held_bytes(&self) -> usize {
        self.held.len()
    }

    fn drain(&mut self, out: &mut String) {
        while let Some(c) = self.replay.pop() {
            self.step(c, out);
        }
    }

    fn step(&mut self, c: char, out: &mut String) {
        match self.mode {
            Mode::Text => self.text(c, out),
            Mode::Tag => {
                self.held.push(c);
                match tag_match(&self.held) {
                    TagMatch::Wait => {}
                    TagMatch::NotTag => self.not_a_tag(out),
                    TagMatch::Strip => {
                        self.held.clear();
                        self.mode = Mode::Text;
                    }
                    TagMatch::Open(name) => {
                        self.held.clear();
                        self.mode = Mode::Block { name, matched: 0 };
                    }
                }
            }
            Mode::Line => {
                self.held.push(c);
                match line_match(&self.held, self.layers, false) {
                    LineMatch::Wait => {}
                    LineMatch::Keep => self.not_a_marker(),
                    LineMatch::DropRest => {
                        self.held.clear();
                        self.mode = Mode::DropLine;
                    }
                    LineMatch::DropWhole => {
                        self.held.clear();
                        self.mode = Mode::Text;
                    }
                }
            }
            Mode::DropLine => {
                if c == '\n' {
                    self.mode = Mode::Text;
                }
            }
            Mode::Block { name, matched } => {
                // `<` occurs in `</name>` only first, so restarting on a mismatch is exact.
                let matched = if close_tag_char(name, matched) == Some(c) {
                    matched + 1
                } else if c == '<' {
                    1
                } else {
                    0
                };
                self.mode = if matched == name.len() + 3 {
                    Mode::Text
                } else {
                    Mode::Block { name, matched }
                };
            }
        }
    }

    fn text(&mut self, c: char, out: &mut String) {
        if self.layers.markers() && !self.line_checked && self.md.fence.is_none() {
            self.mode = Mode::Line;
            self.step(c, out);
            return;
        }
        if self.layers.xml && c == '<' {
            self.md.settle();
            if !self.md.in_code() {
                self.mode = Mode::Tag;
                self.held.push(c);
                return;
            }
        }
        self.emit(c, out);
    }

    fn emit(&mut self, c: char, out: &mut String) {
        out.push(c);
        self.md.feed(c);
        if c == '\n' {
            self.line_checked = false;
        }
    }

    /// The held `<…` is not an internal tag: emit the `<`, replay the rest.
    fn not_a_tag(&mut self, out: &mut String) {
        let held = std::mem::take(&mut self.held);
        self.mode = Mode::Text;
        let mut chars = held.chars();
        if let Some(first) = chars.next() {
            self.emit(first, out);
        }
        self.replay.extend(chars.rev());
    }

    /// The held line start is not a marker: replay it as text.
    fn not_a_marker(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.mode = Mode::Text;
        self.line_checked = true;
        self.replay.extend(held.chars().rev());
    }
}

/// Sanitize a whole text at once.
pub fn sanitize(options: SanitizeOptions, text: &str) -> String {
    let mut sanitizer = Sanitizer::new(options);
    let mut out = sanitizer.push(text).into_owned();
    out.push_str(&sanitizer.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::patterns::{IDENTITY_MARKERS, TOOL_MARKERS};
    use super::*;
    use proptest::prelude::*;

    const XML: SanitizeOptions = SanitizeOptions {
        mode: SanitizeMode::Xml,
        strip_xml_tags: true,
        strip_builtin_tools: true,
    };
    const FULL: SanitizeOptions = SanitizeOptions {
        mode: SanitizeMode::Full,
        strip_xml_tags: true,
        strip_builtin_tools: true,
    };
    const IDENTITY: SanitizeOptions = SanitizeOptions {
        mode: SanitizeMode::Identity,
        strip_xml_tags: true,
        strip_builtin_tools: true,
    };

    /// The mock agent's `artifacts` reply, chunked as it sends it.
    const ARTIFACT_CHUNKS: [&str; 6] = [
        "Here is the answer.<thin",
        "king>internal reas",
        "oning</thinking> The result",
        " is 42.<tool_",
        "use>{\"name\":\"fs_read\"}</tool",
        "_use>",
    ];

    fn chunked(options: SanitizeOptions, chunks: &[&str]) -> String {
        let mut sanitizer = Sanitizer::new(options);
        let mut out = String::new();
        for chunk in chunks {
            out.push_str(&sanitizer.push(chunk));
            assert!(sanitizer.held_bytes() <= MAX_HOLDBACK);
        }
        out + &sanitizer.finish()
    }

    #[test]
    fn the_mock_artifacts_reply_is_cleaned_however_chunked() {
        for options in [XML, FULL] {
            assert_eq!(
                chunked(options, &ARTIFACT_CHUNKS),
                "Here is the answer. The result is 42."
            );
            assert_eq!(
                sanitize(options, &ARTIFACT_CHUNKS.concat()),
                "Here is the answer. The result is 42."
            );
        }
    }

    #[test]
    fn identity_borrows_and_holds_nothing() {
        let mut sanitizer = Sanitizer::new(IDENTITY);
        assert!(sanitizer.is_identity());
        for chunk in ARTIFACT_CHUNKS {
            let out = sanitizer.push(chunk);
            assert!(matches!(out, Cow::Borrowed(s) if std::ptr::eq(s, chunk)));
        }
        assert_eq!(sanitizer.finish(), "");
        let all_off = SanitizeOptions {
            mode: SanitizeMode::Xml,
            strip_xml_tags: false,
            strip_builtin_tools: true,
        };
        assert!(Sanitizer::new(all_off).is_identity());
        assert!(!Sanitizer::new(FULL).is_identity());
        assert!(!Sanitizer::new(SanitizeOptions::default()).is_identity());
    }

    #[test]
    fn ordinary_angle_brackets_pass() {
        for text in [
            "a < b and Vec<T>",
            "<div class=\"x\">hi</div>",
            "x<y>z, <thinkingcap>, </ thinking>, <thinking, <",
            "1 <2 and 3<<4 <tool_usefoo> <invoke<b>",
            "<>",
            "</>",
        ] {
            assert_eq!(sanitize(FULL, text), text, "{text}");
            assert_eq!(sanitize(XML, text), text, "{text}");
        }
    }

    #[test]
    fn every_internal_tag_is_stripped_with_its_content() {
        for tag in INTERNAL_TAGS {
            let text = format!("a<{tag}>secret <b> stuff</{tag}>b");
            assert_eq!(sanitize(XML, &text), "ab", "{tag}");
        }
        assert_eq!(
            sanitize(
                XML,
                "x<function_calls>\n<invoke name=\"fs_read\">\n<parameter name=\"p\">/</parameter>\n</invoke>\n</function_calls>y"
            ),
            "xy"
        );
        assert_eq!(
            sanitize(XML, "x<invoke name=\"a\" id='1'>body</invoke>y"),
            "xy"
        );
        assert_eq!(
            sanitize(XML, "x<system-reminder>be nice</system-reminder>y"),
            "xy"
        );
    }

    #[test]
    fn self_closing_and_stray_closing_tags_are_stripped() {
        assert_eq!(sanitize(XML, "a<thinking/>b<invoke name=\"x\"/>c"), "abc");
        assert_eq!(sanitize(XML, "a</thinking>b</tool_use>c"), "abc");
    }

    #[test]
    fn unterminated_blocks_are_dropped_partial_tags_kept() {
        assert_eq!(sanitize(XML, "answer<thinking>never closed"), "answer");
        assert_eq!(sanitize(XML, "answer<thinking>never </thinkin"), "answer");
        assert_eq!(sanitize(XML, "answer <thin"), "answer <thin");
        assert_eq!(sanitize(XML, "answer <"), "answer <");
        assert_eq!(sanitize(XML, "answer </"), "answer </");
        assert_eq!(sanitize(XML, "x <invoke name=\"a"), "x <invoke name=\"a");
        assert_eq!(sanitize(XML, "x <thinking/"), "x <thinking/");
    }

    #[test]
    fn an_overlong_tag_is_text() {
        let long = format!("<invoke {}>body</invoke>", "a".repeat(MAX_TAG_BYTES));
        assert_eq!(
            sanitize(XML, &long),
            "<invoke aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa>body"
        );
        let fits = format!("<invoke {}>body</invoke>", "a".repeat(100));
        assert_eq!(sanitize(XML, &fits), "");
    }

    #[test]
    fn code_is_left_alone() {
        let fenced = "Use it like this:\n```xml\n<thinking>plan</thinking>\n```\nDone.<thinking>x</thinking>";
        assert_eq!(
            sanitize(FULL, fenced),
            "Use it like this:\n```xml\n<thinking>plan</thinking>\n```\nDone."
        );
        let tilde = "~~~~\n<tool_use>a</tool_use>\n~~~\nstill code <thinking>\n~~~~\n<thinking>x</thinking>!";
        assert_eq!(
            sanitize(XML, tilde),
            "~~~~\n<tool_use>a</tool_use>\n~~~\nstill code <thinking>\n~~~~\n!"
        );
        // A fence line with an info string does not close the block.
        let info = "```\n```rust\n<thinking>kept</thinking>\n```\n<thinking>x</thinking>end";
        assert_eq!(
            sanitize(XML, info),
            "```\n```rust\n<thinking>kept</thinking>\n```\nend"
        );
        let inline = "The `<thinking>` tag and ``<tool_use>` ``, then <thinking>x</thinking>.";
        assert_eq!(
            sanitize(XML, inline),
            "The `<thinking>` tag and ``<tool_use>` ``, then ."
        );
        // An unclosed backtick only protects the rest of its line.
        assert_eq!(
            sanitize(XML, "a ` <thinking>b\n<thinking>c</thinking>d"),
            "a ` <thinking>b\nd"
        );
        // A fence inside a dropped block does not count.
        assert_eq!(
            sanitize(XML, "<thinking>\n```\n</thinking>\n<tool_use>x</tool_use>y"),
            "\ny"
        );
        assert!(ends_inside_code_fence("text\n```rust\nfn main() {"));
        assert!(!ends_inside_code_fence("text\n```rust\nfn main() {}\n```"));
        assert!(!ends_inside_code_fence(
            "text\n```rust\nfn main() {}\n```\n"
        ));
        assert!(ends_inside_code_fence("text\n    ```\n````\ncode\n```"));
        assert!(!ends_inside_code_fence("text\n    ```\n```\ncode\n````"));
        assert!(!ends_inside_code_fence("inline ```code``` here"));
    }

    #[test]
    fn full_mode_drops_marker_lines() {
        let text = "Let me look.\n🛠\u{fe0f}  Using tool: fs_read (trusted)\n ⋮ \n  ● Completed in 0.1s\n[Tool uses: fs_read]\nThe file says hi.\n▸ Credits: 0.05 • Time: 2s\n";
        assert_eq!(sanitize(FULL, text), "Let me look.\nThe file says hi.\n");
        assert_eq!(
            sanitize(
                FULL,
                "🛠 Using tool: x\n● Running tool y\r\n● Using tool z\nok"
            ),
            "ok"
        );
        assert_eq!(
            sanitize(
                FULL,
                "Hello.\nI am Kiro.\nI'm Kiro\n> Kiro is thinking\nBye."
            ),
            "Hello.\nBye."
        );
        // Whole-line markers at the very end, with no newline.
        assert_eq!(sanitize(FULL, "a\nI am Kiro. "), "a\n");
        assert_eq!(sanitize(FULL, "a\n⋮"), "a\n");
    }

    #[test]
    fn marker_patterns_are_conservative() {
        for text in [
            "I am Kiro, an AI assistant.",
            "I am Kirov.",
            "Mentions 🛠 Using tool: inline",
            "⋮ not alone",
            "x\n         ● Running tool deep indent",
            "> Kiro isn't here",
            "▸ Creditsless",
            "I am",
            "```\n● Running tool in code\n```",
        ] {
            assert_eq!(sanitize(FULL, text), text, "{text}");
        }
    }

    #[test]
    fn switches_turn_layers_off() {
        let text = "a<thinking>x</thinking>\n● Running tool y\nI am Kiro\nb";
        let no_tools = SanitizeOptions {
            strip_builtin_tools: false,
            ..FULL
        };
        assert_eq!(sanitize(no_tools, text), "a\n● Running tool y\nb");
        let no_xml = SanitizeOptions {
            strip_xml_tags: false,
            ..FULL
        };
        assert_eq!(sanitize(no_xml, text), "a<thinking>x</thinking>\nb");
        assert_eq!(sanitize(XML, text), "a\n● Running tool y\nI am Kiro\nb");
        assert_eq!(sanitize(IDENTITY, text), text);
    }

    #[test]
    fn plain_text_is_emitted_at_once() {
        let text = "word ".repeat(2048) + "end.";
        for options in [XML, FULL] {
            let mut sanitizer = Sanitizer::new(options);
            assert_eq!(sanitizer.push(&text), text);
            assert_eq!(sanitizer.held_bytes(), 0);
            assert_eq!(sanitizer.finish(), "");
        }
    }

    #[test]
    fn holdback_is_bounded() {
        let mut sanitizer = Sanitizer::new(FULL);
        assert_eq!(sanitizer.push("text <invoke "), "text ");
        assert_eq!(sanitizer.held_bytes(), "<invoke ".len());
        let xs = "x".repeat(1000);
        let out = sanitizer.push(&xs);
        assert!(out.starts_with("<invoke x"));
        assert_eq!(sanitizer.held_bytes(), 0);
        assert_eq!(sanitizer.push("\n  "), "\n");
        assert_eq!(sanitizer.held_bytes(), 2);
        assert_eq!(sanitizer.push("● Running"), "");
        assert_eq!(sanitizer.push(" "), "");
        assert_eq!(sanitizer.push("tool"), "");
        assert_eq!(sanitizer.held_bytes(), "  ● Running tool".len());
        assert_eq!(sanitizer.push(" "), "");
        assert_eq!(
            sanitizer.held_bytes(),
            0,
            "a marker line is dropped, not held"
        );
        assert_eq!(sanitizer.push("x\nok"), "ok");
        let longest_marker = TOOL_MARKERS
            .iter()
            .chain(&IDENTITY_MARKERS)
            .map(|(text, _)| text.len())
            .max()
            .unwrap_or(0);
        assert!(MAX_MARKER_INDENT + longest_marker + MAX_MARKER_INDENT <= MAX_HOLDBACK);
    }

    #[test]
    fn multibyte_text_survives() {
        let text = "日本語のテキスト<thinking>思考</thinking>です。🦀 é\n⋮ x";
        assert_eq!(sanitize(FULL, text), "日本語のテキストです。🦀 é\n⋮ x");
    }

    #[test]
    fn finish_resets_for_a_new_stream() {
        let mut sanitizer = Sanitizer::new(FULL);
        assert_eq!(sanitizer.push("a<thinking>b"), "a");
        assert_eq!(sanitizer.finish(), "");
        assert_eq!(sanitizer.push("c"), "c");
    }

    const FRAGMENTS: &[&str] = &[
        "Hello",
        " world",
        ". ",
        "\n",
        "\n\n",
        "\r\n",
        "<",
        ">",
        "/",
        "a < b",
        "Vec<T>",
        "<div>",
        "</div>",
        "<thinking>",
        "</thinking>",
        "<thin",
        "king>",
        "<antThinking>",
        "</antThinking>",
        "<tool_use>",
        "</tool_use>",
        "<invoke name=\"fs_read\">",
        "<invoke name=\"x\"/>",
        "</invoke>",
        "<function_calls>",
        "</function_calls>",
        "<system-reminder>",
        "</system-reminder>",
        "<thinking/>",
        "</",
        "<<",
        "`",
        "``",
        "```",
        "```rust\n",
        "~~~",
        "    ",
        " ",
        "🛠\u{fe0f} Using tool: fs_read",
        "🛠 Using tool: x",
        "● Running tool y",
        "● Completed in 0.1s",
        "[Tool uses: fs_read]",
        "⋮",
        "I am Kiro",
        ".",
        "I'm Kiro",
        "> Kiro is here",
        "▸ Credits: 1",
        "é",
        "日本",
        "🦀",
        "\t",
    ];

    fn options_strategy() -> impl Strategy<Value = SanitizeOptions> {
        (
            prop::sample::select(vec![
                SanitizeMode::Identity,
                SanitizeMode::Xml,
                SanitizeMode::Full,
            ]),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(mode, strip_xml_tags, strip_builtin_tools)| SanitizeOptions {
                    mode,
                    strip_xml_tags,
                    strip_builtin_tools,
                },
            )
    }

    fn input_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|v| v.concat()),
            "[a-z <>/`~\n .\u{22ee}\u{25cf}é🦀]{0,80}",
            (
                prop::collection::vec(prop::sample::select(FRAGMENTS), 0..20),
                "[a-z <>/`\n]{0,30}"
            )
                .prop_map(|(v, s)| v.concat() + &s),
        ]
    }

    proptest! {
        #[test]
        fn output_does_not_depend_on_chunking(
            options in options_strategy(),
            text in input_strategy(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let whole = sanitize(options, &text);
            let chunks = crate::chunks::split_at(&text, &cuts);
            prop_assert_eq!(chunked(options, &chunks), whole);
        }

        #[test]
        fn one_char_at_a_time_matches_whole(
            options in options_strategy(),
            text in input_strategy(),
        ) {
            let chars: Vec<String> = text.chars().map(String::from).collect();
            let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
            prop_assert_eq!(chunked(options, &refs), sanitize(options, &text));
        }

        #[test]
        fn text_without_specials_is_unchanged(text in "[a-zA-Z0-9 ,.!?é日🦀]{0,200}") {
            prop_assert_eq!(sanitize(FULL, &text), text.clone());
            prop_assert_eq!(sanitize(XML, &text), text);
        }
    }
}
