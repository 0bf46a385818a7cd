//! Emulated tool calling, for agents that cannot take MCP servers: the client's tools are
//! described in the prompt ([`tools_prompt`]), and the model calls them by writing tags in its
//! answer, which [`ToolTagScanner`] parses out of the text stream so the client never sees them
//! as text.
//!
//! The format is strict: one call per tag, the tag holding only a JSON object with a string
//! `name` and an object `arguments`:
//!
//! ```text
//! <tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>
//! ```
//!
//! An answer may hold several tags, and text before, between and after them.

use drawbridge_types::tools::{Tool, ToolChoice};
use serde_json::Value;

/// The tag that opens a call.
pub const OPEN: &str = "<tool_call>";
/// The tag that closes a call.
pub const CLOSE: &str = "</tool_call>";

/// One call in the tagged format (`arguments` is written as given: it should be a JSON object).
pub fn call_tag(name: &str, arguments: &str) -> String {
    let name = Value::String(name.to_owned());
    format!(r#"{OPEN}{{"name":{name},"arguments":{arguments}}}{CLOSE}"#)
}

/// The one-line demand `choice` makes, for native (MCP) mode where the tools themselves reach
/// the agent another way: `None` for `auto` and `none`, which demand nothing.
pub fn choice_instruction(choice: &ToolChoice) -> Option<String> {
    match choice {
        ToolChoice::None | ToolChoice::Auto => None,
        ToolChoice::Required => {
            Some("You must call at least one of the available tools before answering.".to_owned())
        }
        ToolChoice::Function(name) => {
            Some(format!("You must call the tool `{name}` before answering."))
        }
    }
}

/// The block appended after the rendered conversation in emulated mode: the tools (name,
/// description, parameters schema), the exact call format and its rules, what `choice` demands,
/// and with `parallel == false` at most one call. Empty when no tool is offered (no tools, or
/// `choice` is `none`).
pub fn tools_prompt(tools: &[Tool], choice: &ToolChoice, parallel: bool) -> String {
    if tools.is_empty() || *choice == ToolChoice::None {
        return String::new();
    }
    let example = call_tag("TOOL_NAME", r#"{"ARGUMENT":"VALUE"}"#);
    let mut out = String::from("[Tools]\n");
    out.push_str(
        "You can call the tools listed below. They run on the user's side: the only way to call \
         one is to write a tool call tag in your answer, exactly like this:\n\n",
    );
    out.push_str(&example);
    out.push_str("\n\nRules for tool calls:\n");
    out.push_str(&format!(
        "- One call per tag. Inside the tag write only one JSON object with \"name\" (the \
         tool's name) and \"arguments\" (a JSON object that fits the tool's parameters). No \
         other text, markdown or code fences inside the tags, and no {OPEN} tags for any other \
         purpose.\n"
    ));
    if parallel {
        out.push_str("- To make several calls, write one tag per call, one after another.\n");
    } else {
        out.push_str("- Make at most one call (a single tag) in this answer.\n");
    }
    out.push_str(
        "- After your call tags, end your answer: the results come back in the next message.\n\
         - However earlier calls appear in the conversation above, a new call is made only with \
         a tag.\n",
    );
    match choice {
        ToolChoice::Required => out.push_str(
            "- You must call at least one of these tools now; do not answer without a tool \
             call.\n",
        ),
        ToolChoice::Function(name) => out.push_str(&format!(
            "- You must call the tool `{name}` now; do not answer without calling it.\n"
        )),
        ToolChoice::Auto | ToolChoice::None => out.push_str(
            "- Call a tool only when you need one; otherwise answer directly, without tags.\n",
        ),
    }
    out.push_str("\nAvailable tools:\n");
    for tool in tools {
        let function = &tool.function;
        out.push_str(&format!("\n## {}\n", function.name));
        if let Some(description) = function.description.as_deref().map(str::trim)
            && !description.is_empty()
        {
            out.push_str(description);
            out.push('\n');
        }
        match &function.parameters {
            Some(schema) => out.push_str(&format!("Parameters (JSON Schema): {schema}\n")),
            None => out.push_str("Parameters: none (write \"arguments\":{})\n"),
        }
    }
    out
}

/// What the scanner finds in an answer's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text outside the tags, for the client.
    Text(String),
    /// A well-formed call; `arguments` is its JSON object, written compactly.
    Call { name: String, arguments: String },
    /// A tag whose inside is not a well-formed call, or one left open at the end: the raw text
    /// inside it.
    Malformed(String),
}

/// Finds tool call tags in a streamed answer.
///
/// Text outside the tags is passed on as soon as it cannot be the start of an opening tag (only
/// a possible partial `<tool_call>` at the end of the text so far is held back); nothing inside
/// a tag is passed on before its closing tag. Tags may be split across chunks anywhere: the
/// pieces do not depend on how the answer was chunked (apart from how its text is cut into
/// [`Piece::Text`]s). Text that is only whitespace is held back at the start of the answer and
/// after a tag, and dropped if another tag or the end of the answer follows it, so that the
/// line breaks around calls do not reach the client as an answer of their own.
#[derive(Debug)]
pub struct ToolTagScanner {
    /// Text not passed on yet: outside a tag, whitespace held back and a possible partial
    /// opening tag; inside one, the tag's contents so far.
    held: String,
    inside: bool,
    /// Inside a tag: how many bytes of `held` were already searched for the closing tag.
    searched: usize,
    /// Outside a tag: at the start of the answer or right after a tag, with only whitespace
    /// since.
    at_break: bool,
}

impl Default for ToolTagScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolTagScanner {
    pub fn new() -> Self {
        ToolTagScanner {
            held: String::new(),
            inside: false,
            searched: 0,
            at_break: true,
        }
    }

    /// The pieces the answer's next `text` completes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut pieces = Vec::new();
        loop {
            let progressed = if self.inside {
                self.scan_inside(&mut pieces)
            } else {
                self.scan_outside(&mut pieces)
            };
            if !progressed {
                return pieces;
            }
        }
    }

    /// The pieces left at the end of the answer: held text, or a tag left open (malformed).
    pub fn finish(self) -> Vec<Piece> {
        if self.inside {
            vec![Piece::Malformed(self.held)]
        } else if self.holds(&self.held) {
            Vec::new()
        } else {
            vec![Piece::Text(self.held)]
        }
    }

    /// Whether `text`, outside a tag, is not passed on (yet): it is empty, or blank at the
    /// start of the answer or after a tag.
    fn holds(&self, text: &str) -> bool {
        text.is_empty() || (self.at_break && is_blank(text))
    }

    /// Outside a tag: pass on the text before an opening tag and enter it (true), or pass on
    /// what cannot start one and wait for more (false).
    fn scan_outside(&mut self, pieces: &mut Vec<Piece>) -> bool {
        if let Some(at) = self.held.find(OPEN) {
            let before = &self.held[..at];
            if !self.holds(before) {
                pieces.push(Piece::Text(before.to_owned()));
            }
            self.held.drain(..at + OPEN.len());
            self.inside = true;
            self.searched = 0;
            return true;
        }
        let ready = self.held.len() - partial_open_len(&self.held);
        let text = &self.held[..ready];
        if self.holds(text) {
            return false;
        }
        self.at_break = false;
        pieces.push(Piece::Text(text.to_owned()));
        self.held.drain(..ready);
        false
    }

    /// Inside a tag: at its closing tag, pass on the call (true); before it, wait (false).
    fn scan_inside(&mut self, pieces: &mut Vec<Piece>) -> bool {
        let from = self.searched.saturating_sub(CLOSE.len() - 1);
        let found = self.held.as_bytes()[from..]
            .windows(CLOSE.len())
            .position(|window| window == CLOSE.as_bytes());
        let Some(at) = found.map(|p| from + p) else {
            self.searched = self.held.len();
            return false;
        };
        // `at` is a char boundary: the closing tag is ASCII and starts with '<'.
        pieces.push(parse_call(&self.held[..at]));
        self.held.drain(..at + CLOSE.len());
        self.inside = false;
        self.searched = 0;
        self.at_break = true;
        true
    }
}

fn is_blank(text: &str) -> bool {
    text.chars().all(char::is_whitespace)
}

/// The length of the longest end of `text` that is a proper start of [`OPEN`] (it may become a
/// tag with the next chunk).
fn partial_open_len(text: &str) -> usize {
    (1..OPEN.len())
        .rev()
        .find(|&n| text.ends_with(&OPEN[..n]))
        .unwrap_or(0)
}

/// A tag's inside as a call: a JSON object with a non-empty string `name` and an object
/// `arguments` (other members are ignored); anything else is malformed.
fn parse_call(inner: &str) -> Piece {
    if let Ok(Value::Object(mut call)) = serde_json::from_str::<Value>(inner)
        && let (Some(Value::String(name)), Some(arguments @ Value::Object(_))) =
            (call.remove("name"), call.remove("arguments"))
        && !name.is_empty()
    {
        return Piece::Call {
            name,
            arguments: arguments.to_string(),
        };
    }
    Piece::Malformed(inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn text(s: &str) -> Piece {
        Piece::Text(s.to_owned())
    }

    fn call(name: &str, arguments: Value) -> Piece {
        Piece::Call {
            name: name.to_owned(),
            arguments: arguments.to_string(),
        }
    }

    fn malformed(s: &str) -> Piece {
        Piece::Malformed(s.to_owned())
    }

    /// The pieces, with neighbouring texts joined (how text is cut depends on the chunks).
    fn joined(pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        for piece in pieces {
            match (out.last_mut(), piece) {
                (Some(Piece::Text(last)), Piece::Text(more)) => last.push_str(&more),
                (_, piece) => out.push(piece),
            }
        }
        out
    }

    /// Scan `chunks` as one answer; fails if any text piece holds an opening tag.
    fn scan(chunks: &[&str]) -> Vec<Piece> {
        let mut scanner = ToolTagScanner::new();
        let mut pieces = Vec::new();
        for chunk in chunks {
            pieces.extend(scanner.push(chunk));
        }
        pieces.extend(scanner.finish());
        for piece in &pieces {
            if let Piece::Text(t) = piece {
                assert!(!t.is_empty(), "an empty text piece");
                assert!(!t.contains(OPEN), "a tag passed on as text: {t:?}");
            }
        }
        joined(pieces)
    }

    #[test]
    fn calls_are_parsed_out_of_the_text() {
        let answer = "Let me check.\n<tool_call>{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}</tool_call>\n\
                      <tool_call> {\"arguments\": {\"city\": \"Rome\", \"days\": [1, 2]}, \"name\": \"get_weather\"} </tool_call>\n";
        assert_eq!(
            scan(&[answer]),
            vec![
                text("Let me check.\n"),
                call("get_weather", json!({"city": "Paris"})),
                call("get_weather", json!({"city": "Rome", "days": [1, 2]})),
            ]
        );
    }

    #[test]
    fn arguments_are_written_compactly() {
        let pieces =
            scan(&["<tool_call>{\"name\":\"f\",\"arguments\":{ \"a\" : [ 1 , 2 ] }}</tool_call>"]);
        assert_eq!(
            pieces,
            vec![Piece::Call {
                name: "f".into(),
                arguments: r#"{"a":[1,2]}"#.into()
            }]
        );
    }

    #[test]
    fn anything_but_a_name_and_object_arguments_is_malformed() {
        for inner in [
            "",
            "hello",
            "{\"name\":\"f\"}",
            "{\"arguments\":{}}",
            "{\"name\":\"\",\"arguments\":{}}",
            "{\"name\":7,\"arguments\":{}}",
            "{\"name\":\"f\",\"arguments\":\"{}\"}",
            "{\"name\":\"f\",\"arguments\":[1]}",
            "{\"name\":\"f\",\"arguments\":{}} and more",
            "```json\n{\"name\":\"f\",\"arguments\":{}}\n```",
            "[{\"name\":\"f\",\"arguments\":{}}]",
            "<tool_call>{\"name\":\"f\",\"arguments\":{}}",
        ] {
            let answer = format!("a{OPEN}{inner}{CLOSE}b");
            assert_eq!(
                scan(&[&answer]),
                vec![text("a"), malformed(inner), text("b")],
                "{inner}"
            );
        }
    }

    #[test]
    fn an_unterminated_tag_is_malformed_at_the_end() {
        let mut scanner = ToolTagScanner::new();
        assert_eq!(
            scanner.push("Sure. <tool_call>{\"name\":\"f\","),
            vec![text("Sure. ")]
        );
        assert_eq!(scanner.push("\"arguments\":{}}</tool_cal"), vec![]);
        assert_eq!(
            scanner.finish(),
            vec![malformed("{\"name\":\"f\",\"arguments\":{}}</tool_cal")]
        );
    }

    #[test]
    fn text_is_held_back_only_while_it_may_start_a_tag() {
        let mut scanner = ToolTagScanner::new();
        assert_eq!(scanner.push("Hello <"), vec![text("Hello ")]);
        assert_eq!(scanner.push("tool_ca"), vec![]);
        assert_eq!(scanner.push("t"), vec![text("<tool_cat")]);
        assert_eq!(scanner.push(" a <b> <tool_call"), vec![text(" a <b> ")]);
        assert_eq!(scanner.push("s>"), vec![text("<tool_calls>")]);
        assert_eq!(scanner.push(" end <tool"), vec![text(" end ")]);
        assert_eq!(scanner.finish(), vec![text("<tool")]);
    }

    #[test]
    fn nothing_inside_a_tag_is_passed_on_before_it_closes() {
        let mut scanner = ToolTagScanner::new();
        assert_eq!(scanner.push("x<tool_call>{\"name\":\"f\""), vec![text("x")]);
        assert_eq!(scanner.push(",\"arguments\":{}}</tool"), vec![]);
        assert_eq!(
            scanner.push("_call>y"),
            vec![call("f", json!({})), text("y")]
        );
    }

    #[test]
    fn a_stray_closing_tag_is_text() {
        assert_eq!(scan(&["a </tool_call> b"]), vec![text("a </tool_call> b")]);
    }

    #[test]
    fn whitespace_around_calls_is_dropped_but_not_inside_text() {
        let c = call_tag("f", "{}");
        assert_eq!(
            scan(&[&format!("\n\n{c}\n \t{c}\n\n")]),
            vec![call("f", json!({})), call("f", json!({}))]
        );
        assert_eq!(
            scan(&[&format!("  Hi\n{c}\n Bye \n")]),
            vec![text("  Hi\n"), call("f", json!({})), text("\n Bye \n")]
        );
        assert_eq!(scan(&["\n  \n"]), vec![]);
        assert_eq!(scan(&["  Hello  "]), vec![text("  Hello  ")]);
        // Held whitespace is passed on with the text that follows it, chunk by chunk.
        let mut scanner = ToolTagScanner::new();
        assert_eq!(scanner.push(&c), vec![call("f", json!({}))]);
        assert_eq!(scanner.push("\n"), vec![]);
        assert_eq!(scanner.push("\nok"), vec![text("\n\nok")]);
        assert_eq!(scanner.push("\n"), vec![text("\n")]);
        assert_eq!(scanner.finish(), vec![]);
    }

    #[test]
    fn call_tag_round_trips_through_the_scanner() {
        let tag = call_tag("say \"hi\"", r#"{"a":"</b>"}"#);
        assert_eq!(
            scan(&[&tag]),
            vec![call("say \"hi\"", json!({"a": "</b>"}))]
        );
    }

    /// A sample answer with every feature: text, a split-prone near-tag, calls, whitespace
    /// between calls, a malformed tag, a stray closing tag, multi-byte text and an open tag at
    /// the end.
    const SAMPLE: &str = "Héllo <tool_ca <tool_call>{\"name\":\"a\",\"arguments\":{\"x\":\"é</tool\"}}</tool_call>\n \
                          <tool_call>{\"name\":\"b\",\"arguments\":{}}</tool_call><tool_call>oops</tool_call>\
                          z </tool_call> <<tool_call>{\"name\":\"c\"";

    fn sample_pieces() -> Vec<Piece> {
        vec![
            text("Héllo <tool_ca "),
            call("a", json!({"x": "é</tool"})),
            call("b", json!({})),
            malformed("oops"),
            text("z </tool_call> <"),
            malformed("{\"name\":\"c\""),
        ]
    }

    #[test]
    fn every_split_into_up_to_three_chunks_gives_the_same_pieces() {
        let whole = scan(&[SAMPLE]);
        assert_eq!(whole, sample_pieces());
        let cuts: Vec<usize> = SAMPLE
            .char_indices()
            .map(|(i, _)| i)
            .chain([SAMPLE.len()])
            .collect();
        for (n, &i) in cuts.iter().enumerate() {
            assert_eq!(scan(&[&SAMPLE[..i], &SAMPLE[i..]]), whole, "split at {i}");
            for &j in &cuts[n..] {
                assert_eq!(
                    scan(&[&SAMPLE[..i], &SAMPLE[i..j], &SAMPLE[j..]]),
                    whole,
                    "split at {i} and {j}"
                );
            }
        }
    }

    #[test]
    fn the_tools_prompt_describes_tools_format_and_choice() {
        let tools = [
            Tool::function(
                "get_weather",
                "The weather in a city.",
                // Keys in order, so the text is the same whether or not serde_json keeps
                // insertion order.
                json!({"properties": {"city": {"type": "string"}}, "type": "object"}),
            ),
            Tool {
                kind: "function".into(),
                function: drawbridge_types::tools::FunctionDef {
                    name: "now".into(),
                    description: None,
                    parameters: None,
                    strict: None,
                },
            },
        ];
        let prompt = tools_prompt(&tools, &ToolChoice::Auto, true);
        for part in [
            "## get_weather\nThe weather in a city.\nParameters (JSON Schema): {\"properties\":{\"city\":{\"type\":\"string\"}},\"type\":\"object\"}\n",
            "## now\nParameters: none",
            r#"<tool_call>{"name":"TOOL_NAME","arguments":{"ARGUMENT":"VALUE"}}</tool_call>"#,
            "One call per tag",
            "one tag per call",
            "only when you need one",
            "a new call is made only with a tag.\n",
        ] {
            assert!(prompt.contains(part), "{part:?} not in\n{prompt}");
        }
        assert!(!prompt.contains("at most one call"));
        // The example in the prompt is a call the scanner reads.
        let example = prompt
            .lines()
            .find(|l| l.starts_with(OPEN))
            .unwrap_or_default();
        assert_eq!(
            scan(&[example]),
            vec![call("TOOL_NAME", json!({"ARGUMENT": "VALUE"}))]
        );

        let single = tools_prompt(&tools, &ToolChoice::Required, false);
        assert!(single.contains("at most one call"), "{single}");
        assert!(single.contains("must call at least one"), "{single}");
        assert!(!single.contains("one tag per call"));

        let named = tools_prompt(&tools, &ToolChoice::Function("now".into()), true);
        assert!(named.contains("You must call the tool `now`"), "{named}");

        assert_eq!(tools_prompt(&tools, &ToolChoice::None, true), "");
        assert_eq!(tools_prompt(&[], &ToolChoice::Auto, true), "");
        assert_eq!(
            tools_prompt(&tools, &ToolChoice::Auto, true),
            prompt,
            "deterministic"
        );
    }

    #[test]
    fn choice_instructions_only_for_forced_calls() {
        assert_eq!(choice_instruction(&ToolChoice::Auto), None);
        assert_eq!(choice_instruction(&ToolChoice::None), None);
        assert_eq!(
            choice_instruction(&ToolChoice::Function("x".into())).as_deref(),
            Some("You must call the tool `x` before answering.")
        );
        let required = choice_instruction(&ToolChoice::Required).unwrap_or_default();
        assert!(required.contains("must call at least one"), "{required}");
    }

    /// One part of a generated answer.
    #[derive(Debug, Clone)]
    enum Part {
        /// Text without `>`, so parts of text never form a tag (near-tags are kept).
        Text(String),
        Call(String, Value),
        Bad(String),
        StrayClose,
    }

    fn part() -> impl Strategy<Value = Part> {
        let texts = prop_oneof![
            "[a-z é\n<]{0,6}",
            Just("<tool_call".to_owned()),
            Just("<tool_".to_owned()),
            Just("</tool_call".to_owned()),
            Just(" \n".to_owned()),
        ];
        let arguments = prop_oneof![
            Just(json!({})),
            Just(json!({"city": "Paris"})),
            Just(json!({"q": "<tool_call>", "n": [1, {"z": null}]})),
            Just(json!({"s": "</tool_cal"})),
        ];
        let bad = prop_oneof![
            "[a-z {}\"<]{0,8}",
            Just(r#"{"name":"f"}"#.to_owned()),
            Just(r#"{"name":"f","arguments":"{}"}"#.to_owned()),
            Just("<tool_call>".to_owned()),
        ];
        prop_oneof![
            3 => texts.prop_map(Part::Text),
            2 => ("[a-z_]{1,8}", arguments).prop_map(|(n, a)| Part::Call(n, a)),
            1 => bad.prop_map(Part::Bad),
            1 => Just(Part::StrayClose),
        ]
    }

    /// The answer the parts make (each call written compactly or spaced out) and the pieces
    /// expected from it.
    fn answer(parts: &[Part], spaced: bool, open_at_end: Option<&str>) -> (String, Vec<Piece>) {
        let mut out = String::new();
        let mut expected: Vec<Piece> = Vec::new();
        let mut run = String::new();
        // A run of text between tags is one piece, unless it is blank.
        fn flush(run: &mut String, expected: &mut Vec<Piece>) {
            if !is_blank(run) {
                expected.push(Piece::Text(run.clone()));
            }
            run.clear();
        }
        for part in parts {
            match part {
                Part::Text(t) => {
                    out.push_str(t);
                    run.push_str(t);
                }
                Part::StrayClose => {
                    out.push_str(CLOSE);
                    run.push_str(CLOSE);
                }
                Part::Call(name, arguments) => {
                    flush(&mut run, &mut expected);
                    let body = json!({"name": name, "arguments": arguments});
                    let inner = if spaced {
                        format!(
                            "\n{}\n",
                            serde_json::to_string_pretty(&body).unwrap_or_default()
                        )
                    } else {
                        body.to_string()
                    };
                    out.push_str(&format!("{OPEN}{inner}{CLOSE}"));
                    expected.push(Piece::Call {
                        name: name.clone(),
                        arguments: arguments.to_string(),
                    });
                }
                Part::Bad(inner) => {
                    flush(&mut run, &mut expected);
                    out.push_str(&format!("{OPEN}{inner}{CLOSE}"));
                    expected.push(Piece::Malformed(inner.clone()));
                }
            }
        }
        flush(&mut run, &mut expected);
        if let Some(inner) = open_at_end {
            out.push_str(OPEN);
            out.push_str(inner);
            expected.push(Piece::Malformed(inner.to_owned()));
        }
        (out, expected)
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_pieces(
            parts in prop::collection::vec(part(), 0..8),
            spaced in any::<bool>(),
            open_at_end in proptest::option::of("[a-z{\"]{0,6}"),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let (answer, expected) = answer(&parts, spaced, open_at_end.as_deref());
            let whole = scan(&[&answer]);
            prop_assert_eq!(&whole, &expected);
            let chunks = crate::chunks::split_at(&answer, &cuts);
            prop_assert_eq!(scan(&chunks), whole);
        }

        #[test]
        fn arbitrary_text_is_never_lost_or_shown_as_a_tag(
            answer in "[a-z<>/_ \n{}\"]{0,40}",
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let whole = scan(&[&answer]);
            prop_assert_eq!(scan(&crate::chunks::split_at(&answer, &cuts)), whole.clone());
            // Without any opening tag, the answer is its text (less blank text).
            if !answer.contains(OPEN) {
                let expected = if is_blank(&answer) { vec![] } else { vec![text(&answer)] };
                prop_assert_eq!(whole, expected);
            }
        }
    }
}
