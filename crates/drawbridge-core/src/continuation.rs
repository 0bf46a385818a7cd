//! Auto-continuation: detect a truncated answer, ask the agent to go on in the same session,
//! and join the parts so the client sees one answer.
//!
//! # When a turn looks truncated ([`looks_truncated`])
//!
//! Never when continuation is disabled, when `round >= max_rounds` (`round` counts the
//! continuations already sent for this request, 0 for the first turn), or when the turn
//! stopped for another reason than the end of its turn or the token limit
//! ([`StopKind::Other`]: refusal, cancellation, tool calls, error). Otherwise the first layer
//! that fires, in this order:
//!
//! 1. [`Reason::MaxTokens`]: the agent stopped at its output token limit.
//! 2. [`Reason::ContextFull`]: the agent reported a context usage (a percentage, 0–100) with
//!    `percent / 100 > context_threshold`; exactly the threshold does not fire.
//! 3. [`Reason::UnnaturalEnding`]: the answer so far has more than `min_chars` characters
//!    (Unicode scalar values; exactly `min_chars` is not checked) and does not
//!    [end naturally](ends_naturally).
//!
//! # Natural ending ([`ends_naturally`])
//!
//! An answer ends unnaturally when any of these holds, and naturally otherwise:
//!
//! 1. it ends inside an open fenced code block (an odd number of fences, by the Markdown rules
//!    of [`crate::sanitize`]);
//! 2. its last non-whitespace character is one of `, ; ( [ { - – — &`, or is `:` not followed
//!    by a line break;
//! 3. its last word (a run of ASCII letters, compared case-insensitively) is one of
//!    [`CONNECTIVES`], such as `and`, `the`, `because`;
//! 4. its last non-whitespace character is alphanumeric (any script: a word or number cut
//!    off, or a sentence without its full stop), unless the last line is a Markdown list item
//!    (`- `, `* `, `+ `, `1. `, `1) `).
//!
//! So `.`, `!`, `?`, `。`, `！`, `？`, a closing quote, bracket or emphasis (`done."`, `**Done.**`),
//! a closing fence, a table row ending in `|`, an emoji and `:` at the end of a line are all
//! natural endings; a word cut in the middle, a trailing comma or `and`, or an open code block
//! are not.
//!
//! # Continuing ([`continuation_prompt`], [`splice`], [`Splicer`])
//!
//! The continuation prompt goes to the same ACP session, which already holds the conversation
//! and the partial answer; it asks for the rest without repetition and quotes the last
//! [`ANCHOR_CHARS`] characters as an anchor. Models still often restart with the last words
//! they wrote, so the continuation is spliced: when it starts with a suffix of the answer so
//! far of at least [`MIN_OVERLAP_CHARS`] characters (looking at most [`OVERLAP_WINDOW_CHARS`]
//! back), the longest such overlap is cut.

use std::borrow::Cow;

use drawbridge_types::openai::FinishReason;

use crate::sanitize::ends_inside_code_fence;

/// The continuation settings (`continuation` in the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContinuationOptions {
    pub enabled: bool,
    /// The most continuation prompts sent for one request.
    pub max_rounds: u32,
    /// The context usage (a fraction, 0–1) above which a turn counts as truncated.
    pub context_threshold: f64,
    /// The answer length (in characters) above which its ending is checked.
    pub min_chars: usize,
}

impl Default for ContinuationOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            max_rounds: 5,
            context_threshold: 0.95,
            min_chars: 4000,
        }
    }
}

/// How the agent's turn stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// The agent ended its turn.
    EndTurn,
    /// The agent hit its output token limit.
    MaxTokens,
    /// Anything else (refused, cancelled, tool calls, error): never continued.
    Other,
}

impl StopKind {
    /// From the OpenAI finish reason a worker reports: `stop` → `EndTurn`, `length` →
    /// `MaxTokens`, anything else → `Other`.
    pub fn from_finish_reason(reason: FinishReason) -> Self {
        match reason {
            FinishReason::Stop => Self::EndTurn,
            FinishReason::Length => Self::MaxTokens,
            FinishReason::ContentFilter | FinishReason::ToolCalls | FinishReason::Error => {
                Self::Other
            }
        }
    }
}

/// Which layer of the heuristic found the turn truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MaxTokens,
    ContextFull,
    UnnaturalEnding,
}

impl Reason {
    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MaxTokens => "max_tokens",
            Reason::ContextFull => "context_full",
            Reason::UnnaturalEnding => "unnatural_ending",
        }
    }
}

/// Words that do not end a sentence: an answer whose last word is one of them was cut off.
pub const CONNECTIVES: [&str; 31] = [
    "and", "or", "but", "nor", "so", "yet", "because", "although", "while", "the", "an", "of",
    "to", "in", "on", "at", "by", "with", "for", "from", "into", "that", "which", "who", "if",
    "then", "than", "as", "is", "are", "was",
];

/// Characters that never end an answer (`:` is handled apart).
const CUT_CHARS: [char; 9] = [',', ';', '(', '[', '{', '-', '–', '—', '&'];

/// How much of the answer so far the continuation prompt quotes, in characters.
pub const ANCHOR_CHARS: usize = 200;

/// The shortest overlap [`splice`] cuts, in characters.
pub const MIN_OVERLAP_CHARS: usize = 8;

/// The longest overlap [`splice`] looks for, in characters; also the most a [`Splicer`] holds.
pub const OVERLAP_WINDOW_CHARS: usize = 256;

/// Whether the turn that produced `answer_so_far` (all rounds so far, joined) looks truncated
/// and should be continued; see the module docs for the rule.
pub fn looks_truncated(
    options: &ContinuationOptions,
    round: u32,
    answer_so_far: &str,
    stop: StopKind,
    context_usage_percent: Option<f64>,
) -> Option<Reason> {
    if !options.enabled || round >= options.max_rounds {
        return None;
    }
    match stop {
        StopKind::Other => None,
        StopKind::MaxTokens => Some(Reason::MaxTokens),
        StopKind::EndTurn => {
            if context_usage_percent.is_some_and(|p| p / 100.0 > options.context_threshold) {
                Some(Reason::ContextFull)
            } else if answer_so_far.chars().nth(options.min_chars).is_some()
                && !ends_naturally(answer_so_far)
            {
                Some(Reason::UnnaturalEnding)
            } else {
                None
            }
        }
    }
}

/// Whether `answer` ends the way a finished answer does; see the module docs for the rule.
pub fn ends_naturally(answer: &str) -> bool {
    if ends_inside_code_fence(answer) {
        return false;
    }
    let trimmed = answer.trim_end();
    let Some(last) = trimmed.chars().next_back() else {
        return true;
    };
    if last == ':' {
        return answer[trimmed.len()..].contains('\n');
    }
    if CUT_CHARS.contains(&last) {
        return false;
    }
    let word_start = trimmed
        .rfind(|c: char| !c.is_ascii_alphabetic())
        .map_or(0, |i| {
            i + trimmed[i..].chars().next().map_or(1, char::len_utf8)
        });
    let word = &trimmed[word_start..];
    let before_word = trimmed[..word_start].chars().next_back();
    if before_word.is_none_or(char::is_whitespace)
        && CONNECTIVES.iter().any(|c| c.eq_ignore_ascii_case(word))
    {
        return false;
    }
    if last.is_alphanumeric() {
        let line = trimmed.rsplit('\n').next().unwrap_or(trimmed);
        return is_list_item(line);
    }
    true
}

/// `- x`, `* x`, `+ x`, `1. x`, `1) x`, after any indentation.
fn is_list_item(line: &str) -> bool {
    let line = line.trim_start();
    if ["- ", "* ", "+ "]
        .iter()
        .any(|bullet| line.starts_with(bullet))
    {
        return true;
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    digits > 0 && (line[digits..].starts_with(". ") || line[digits..].starts_with(") "))
}

/// The last `n` characters of `text`.
fn last_chars(text: &str, n: usize) -> &str {
    match n.checked_sub(1) {
        None => "",
        Some(skip) => text
            .char_indices()
            .rev()
            .nth(skip)
            .map_or(text, |(i, _)| &text[i..]),
    }
}

/// The prompt that asks the agent, in the same session, to continue `answer_so_far` (the
/// whole answer so far: it tells whether a code block is open, and its end is the anchor).
pub fn continuation_prompt(answer_so_far: &str) -> String {
    let mut prompt = String::from(
        "Your previous reply was cut off before it was finished. Continue it from exactly where \
         it stopped.\n\
         - Start with the very next character of the reply; if it stopped in the middle of a \
         word, finish that word.\n\
         - Do not repeat anything already written, do not summarise it, and add no preamble, \
         heading or remark about continuing.\n",
    );
    if ends_inside_code_fence(answer_so_far) {
        prompt.push_str(
            "- The reply stopped inside an open code block: continue the code without opening a \
             new code fence, and close the block when the code is complete.\n",
        );
    }
    prompt.push_str(
        "Your reply so far ends with the text between <<<REPLY_END and REPLY_END>>>:\n\
         <<<REPLY_END\n",
    );
    prompt.push_str(last_chars(answer_so_far, ANCHOR_CHARS));
    prompt.push_str("\nREPLY_END>>>");
    prompt
}

/// The part of `next` (a continuation) to emit after `previous` (the answer so far): `next`
/// without the longest prefix of at least [`MIN_OVERLAP_CHARS`] and at most
/// [`OVERLAP_WINDOW_CHARS`] characters that repeats the end of `previous` (all of `next` when
/// it is such a repeat); `next` unchanged when there is none.
pub fn splice<'a>(previous: &str, next: &'a str) -> &'a str {
    let tail = last_chars(previous, OVERLAP_WINDOW_CHARS);
    &next[overlap(tail, next)..]
}

/// The byte length of the longest prefix of `next` that `tail` ends with, if it has at least
/// [`MIN_OVERLAP_CHARS`] and at most [`OVERLAP_WINDOW_CHARS`] characters; else 0.
fn overlap(tail: &str, next: &str) -> usize {
    let ends: Vec<usize> = next
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take(OVERLAP_WINDOW_CHARS)
        .collect();
    ends.iter()
        .enumerate()
        .rev()
        .take_while(|(i, _)| i + 1 >= MIN_OVERLAP_CHARS)
        .find(|(_, end)| tail.ends_with(&next[..**end]))
        .map_or(0, |(_, end)| *end)
}

/// [`splice`] on a streamed continuation: holds its start back only until the overlap is
/// decided (at most [`OVERLAP_WINDOW_CHARS`] characters, and no longer than the text could
/// still repeat the end of the answer), then passes chunks through unchanged. The output is
/// the same however the continuation is split.
#[derive(Debug, Clone)]
pub struct Splicer {
    /// The end of the answer so far.
    tail: String,
    /// The start of the continuation, while undecided.
    held: String,
    decided: bool,
}

impl Splicer {
    /// A splicer for a continuation of `previous`, the answer so far.
    pub fn new(previous: &str) -> Self {
        Self {
            tail: last_chars(previous, OVERLAP_WINDOW_CHARS).to_owned(),
            held: String::new(),
            decided: false,
        }
    }

    /// Feed the next chunk of the continuation; returns the text to emit now (`chunk` itself,
    /// borrowed, once the overlap is decided).
    pub fn push<'a>(&mut self, chunk: &'a str) -> Cow<'a, str> {
        if self.decided {
            return Cow::Borrowed(chunk);
        }
        self.held.push_str(chunk);
        if self.could_grow() {
            return Cow::Borrowed("");
        }
        Cow::Owned(self.decide())
    }

    /// End of the continuation: returns what is still held, without the overlap.
    pub fn finish(&mut self) -> String {
        if self.decided {
            String::new()
        } else {
            self.decide()
        }
    }

    /// How many bytes are held back now.
    pub fn held_bytes(&self) -> usize {
        self.held.len()
    }

    /// Whether more text could make a longer overlap: some suffix of the tail longer than
    /// `held` starts with it (every suffix of the tail is within the window).
    fn could_grow(&self) -> bool {
        self.held.chars().nth(OVERLAP_WINDOW_CHARS - 1).is_none()
            && self
                .tail
                .char_indices()
                .map(|(i, _)| &self.tail[i..])
                .any(|suffix| suffix.len() > self.held.len() && suffix.starts_with(&self.held))
    }

    fn decide(&mut self) -> String {
        self.decided = true;
        let held = std::mem::take(&mut self.held);
        let cut = overlap(&self.tail, &held);
        held[cut..].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opts() -> ContinuationOptions {
        ContinuationOptions::default()
    }

    /// A natural answer of exactly `n` chars (ends with a full stop).
    fn long(n: usize) -> String {
        let mut s = "word ".repeat(n / 5 + 1);
        s.truncate(n - 1);
        s.push('.');
        s
    }

    /// `long(n)` with its last char replaced to end mid-word.
    fn cut(n: usize) -> String {
        let mut s = long(n);
        s.pop();
        s.push('x');
        s
    }

    #[test]
    fn defaults_match_the_spec() {
        assert_eq!(
            opts(),
            ContinuationOptions {
                enabled: true,
                max_rounds: 5,
                context_threshold: 0.95,
                min_chars: 4000,
            }
        );
    }

    #[test]
    fn max_tokens_always_continues() {
        assert_eq!(
            looks_truncated(&opts(), 0, "", StopKind::MaxTokens, None),
            Some(Reason::MaxTokens)
        );
        assert_eq!(
            looks_truncated(&opts(), 4, "Done.", StopKind::MaxTokens, Some(99.0)),
            Some(Reason::MaxTokens)
        );
    }

    #[test]
    fn context_usage_above_the_threshold_continues() {
        let t = |p| looks_truncated(&opts(), 0, "Done.", StopKind::EndTurn, p);
        assert_eq!(t(Some(95.5)), Some(Reason::ContextFull));
        assert_eq!(t(Some(100.0)), Some(Reason::ContextFull));
        assert_eq!(t(Some(95.0)), None, "exactly the threshold");
        assert_eq!(t(Some(94.9)), None);
        assert_eq!(t(None), None);
        assert_eq!(t(Some(f64::NAN)), None);
        let half = ContinuationOptions {
            context_threshold: 0.5,
            ..opts()
        };
        assert_eq!(
            looks_truncated(&half, 0, "Done.", StopKind::EndTurn, Some(50.1)),
            Some(Reason::ContextFull)
        );
    }

    #[test]
    fn a_long_answer_ending_unnaturally_continues() {
        let t = |answer: &str| looks_truncated(&opts(), 0, answer, StopKind::EndTurn, Some(10.0));
        assert_eq!(t(&cut(4001)), Some(Reason::UnnaturalEnding));
        assert_eq!(t(&cut(4000)), None, "exactly min_chars is not checked");
        assert_eq!(t(&long(4001)), None);
        assert_eq!(t(&cut(100)), None);
        // Characters, not bytes.
        let multibyte = "é".repeat(3000) + " and";
        assert_eq!(t(&multibyte), None);
        let multibyte = "é".repeat(4000) + " and";
        assert_eq!(t(&multibyte), Some(Reason::UnnaturalEnding));
    }

    #[test]
    fn limits_and_switches() {
        let answer = cut(5000);
        for round in 0..5 {
            assert!(looks_truncated(&opts(), round, &answer, StopKind::EndTurn, None).is_some());
        }
        assert_eq!(
            looks_truncated(&opts(), 5, &answer, StopKind::MaxTokens, Some(99.0)),
            None,
            "round limit"
        );
        let off = ContinuationOptions {
            enabled: false,
            ..opts()
        };
        assert_eq!(
            looks_truncated(&off, 0, &answer, StopKind::MaxTokens, Some(99.0)),
            None
        );
        let zero = ContinuationOptions {
            max_rounds: 0,
            ..opts()
        };
        assert_eq!(
            looks_truncated(&zero, 0, &answer, StopKind::MaxTokens, None),
            None
        );
        assert_eq!(
            looks_truncated(&opts(), 0, &answer, StopKind::Other, Some(99.0)),
            None,
            "refusals, cancellations and errors are never continued"
        );
    }

    #[test]
    fn stop_kind_from_finish_reason() {
        assert_eq!(
            StopKind::from_finish_reason(FinishReason::Stop),
            StopKind::EndTurn
        );
        assert_eq!(
            StopKind::from_finish_reason(FinishReason::Length),
            StopKind::MaxTokens
        );
        assert_eq!(
            StopKind::from_finish_reason(FinishReason::ToolCalls),
            StopKind::Other
        );
        assert_eq!(Reason::UnnaturalEnding.as_str(), "unnatural_ending");
    }

    #[test]
    fn natural_endings() {
        for answer in [
            "",
            "Done.",
            "Really!",
            "Why?",
            "完成。",
            "He said \"done.\"",
            "(See above.)",
            "**Done.**",
            "Here it is:\n",
            "Happy coding! 🚀",
            "Code:\n```rust\nfn main() {}\n```",
            "| a | b |\n|---|---|\n| 1 | 2 |",
            "Languages:\n- Rust\n- Go",
            "Steps:\n1. Install\n2) Run it",
            "Done.   \n\n",
            "The brand.",
            "I want an <b>",
        ] {
            assert!(ends_naturally(answer), "{answer:?}");
        }
    }

    #[test]
    fn unnatural_endings() {
        for answer in [
            "The quick brown fo",
            "The total is 4",
            "First,",
            "Items; ",
            "call(",
            "Note: the",
            "Here it is:",
            "Use this and",
            "- Install the package and",
            "- Install the package,",
            "- Bread\n- Eggs and THE",
            "Code:\n```rust\nfn main() {}\n",
            "Code:\n```rust\nfn main() {}\n```\nMore:\n```\nx.",
            "well-",
            "## Summary",
            "这是答案",
            "A band",
        ] {
            assert!(!ends_naturally(answer), "{answer:?}");
        }
    }

    #[test]
    fn the_prompt_asks_for_the_rest_with_an_anchor() {
        let answer = "a".repeat(300) + "\nThe end is nea";
        let prompt = continuation_prompt(&answer);
        assert!(prompt.contains("Continue it from exactly where it stopped"));
        assert!(prompt.contains("Do not repeat anything already written"));
        assert!(!prompt.contains("code block"));
        let anchor = last_chars(&answer, ANCHOR_CHARS);
        assert_eq!(anchor.chars().count(), ANCHOR_CHARS);
        assert!(prompt.ends_with(&format!("<<<REPLY_END\n{anchor}\nREPLY_END>>>")));
        assert!(!prompt.contains(&"a".repeat(190)));

        let in_code = continuation_prompt("Here:\n```python\ndef f(");
        assert!(in_code.contains("inside an open code block"));
        assert!(in_code.ends_with("<<<REPLY_END\nHere:\n```python\ndef f(\nREPLY_END>>>"));
    }

    #[test]
    fn last_chars_respects_char_boundaries() {
        assert_eq!(last_chars("héllo", 4), "éllo");
        assert_eq!(last_chars("héllo", 10), "héllo");
        assert_eq!(last_chars("héllo", 0), "");
        assert_eq!(last_chars("", 3), "");
    }

    #[test]
    fn splice_cuts_a_repeated_suffix() {
        let previous = "The quick brown fox jumps over the la";
        assert_eq!(splice(previous, "over the lazy dog."), "zy dog.");
        assert_eq!(splice(previous, "zy dog."), "zy dog.", "no overlap");
        assert_eq!(
            splice(previous, "the lazy dog."),
            "the lazy dog.",
            "7 chars is too short"
        );
        assert_eq!(
            splice(previous, " the lazy dog."),
            " the lazy dog.",
            "not a suffix"
        );
        assert_eq!(
            splice(previous, "fox jumps over the la"),
            "",
            "entirely an overlap"
        );
        assert_eq!(
            splice("ab ab ab ab ab ab", "ab ab ab ab ab abc"),
            "c",
            "the longest overlap wins"
        );
        assert_eq!(splice("", "anything at all"), "anything at all");
        assert_eq!(
            splice("日本語のテキストです", "語のテキストです。続き"),
            "。続き"
        );
        let far = "x".repeat(OVERLAP_WINDOW_CHARS + 10);
        assert_eq!(splice(&far, &far), &far[OVERLAP_WINDOW_CHARS..]);
    }

    #[test]
    fn splicer_holds_only_while_the_overlap_can_grow() {
        let mut splicer = Splicer::new("The quick brown fox jumps over the la");
        assert_eq!(splicer.push("over the "), "");
        assert_eq!(splicer.push("l"), "");
        assert_eq!(splicer.push("azy"), "zy");
        assert_eq!(splicer.held_bytes(), 0);
        assert!(matches!(splicer.push(" dog."), Cow::Borrowed(" dog.")));
        assert_eq!(splicer.finish(), "");

        let mut splicer = Splicer::new("The quick brown fox");
        assert_eq!(
            splicer.push("Next, "),
            "Next, ",
            "decided at the first char"
        );

        let mut splicer = Splicer::new("The quick brown fox");
        assert_eq!(splicer.push("brown f"), "");
        assert_eq!(
            splicer.finish(),
            "brown f",
            "shorter than the minimum overlap"
        );
    }

    proptest! {
        #[test]
        fn splicing_does_not_depend_on_chunking(
            previous in "[ab é]{0,40}",
            repeat in any::<prop::sample::Index>(),
            rest in "[ab é.]{0,30}",
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            // The continuation often starts with a suffix of the answer so far.
            let starts: Vec<usize> = previous.char_indices().map(|(i, _)| i).collect();
            let repeated = if starts.is_empty() {
                ""
            } else {
                &previous[starts[repeat.index(starts.len())]..]
            };
            let next = format!("{repeated}{rest}");
            let expected = splice(&previous, &next);
            prop_assert!(next.ends_with(expected));
            let mut splicer = Splicer::new(&previous);
            let mut out = String::new();
            for chunk in crate::chunks::split_at(&next, &cuts) {
                out.push_str(&splicer.push(chunk));
                prop_assert!(splicer.held_bytes() <= next.len());
            }
            out.push_str(&splicer.finish());
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn splice_never_drops_text_that_is_not_repeated(
            previous in "[a-z ]{0,40}",
            next in "[A-Z][A-Z ]{0,39}",
        ) {
            prop_assert_eq!(splice(&previous, &next), next.as_str());
        }

        #[test]
        fn the_heuristic_is_deterministic_and_bounded(
            answer in "[a-z .,\n`]{0,60}",
            round in 0u32..8,
            percent in proptest::option::of(0.0f64..100.0),
            stop in prop::sample::select(vec![StopKind::EndTurn, StopKind::MaxTokens, StopKind::Other]),
        ) {
            let small = ContinuationOptions { min_chars: 10, ..ContinuationOptions::default() };
            let first = looks_truncated(&small, round, &answer, stop, percent);
            prop_assert_eq!(first, looks_truncated(&small, round, &answer, stop, percent));
            if round >= small.max_rounds || stop == StopKind::Other {
                prop_assert_eq!(first, None);
            }
        }
    }
}
