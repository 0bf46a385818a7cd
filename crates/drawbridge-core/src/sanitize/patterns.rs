//! What the sanitizer looks for: the line markers, the layers that are on, and the matching
//! of internal XML tags and marker lines on held text.

use super::{INTERNAL_TAGS, MAX_MARKER_INDENT, MAX_TAG_BYTES, SanitizeMode, SanitizeOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MarkerKind {
    /// The line starts with the text.
    Prefix,
    /// The line is the text (trailing whitespace aside).
    Whole,
}

pub(super) type Marker = (&'static str, MarkerKind);

pub(super) const TOOL_MARKERS: [Marker; 9] = [
    ("🛠\u{fe0f} Using tool:", MarkerKind::Prefix),
    ("🛠\u{fe0f}  Using tool:", MarkerKind::Prefix),
    ("🛠 Using tool:", MarkerKind::Prefix),
    ("🛠  Using tool:", MarkerKind::Prefix),
    ("● Running tool ", MarkerKind::Prefix),
    ("● Using tool ", MarkerKind::Prefix),
    ("● Completed in ", MarkerKind::Prefix),
    ("[Tool uses: ", MarkerKind::Prefix),
    ("⋮", MarkerKind::Whole),
];

pub(super) const IDENTITY_MARKERS: [Marker; 7] = [
    ("> Kiro is ", MarkerKind::Prefix),
    ("▸ Credits: ", MarkerKind::Prefix),
    ("▸ Time: ", MarkerKind::Prefix),
    ("I am Kiro", MarkerKind::Whole),
    ("I am Kiro.", MarkerKind::Whole),
    ("I'm Kiro", MarkerKind::Whole),
    ("I'm Kiro.", MarkerKind::Whole),
];

/// The layers that are on, from the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layers {
    pub(super) xml: bool,
    tools: bool,
    identity: bool,
}

impl Layers {
    pub(super) fn of(options: SanitizeOptions) -> Self {
        match options.mode {
            SanitizeMode::Identity => Self {
                xml: false,
                tools: false,
                identity: false,
            },
            SanitizeMode::Xml => Self {
                xml: options.strip_xml_tags,
                tools: false,
                identity: false,
            },
            SanitizeMode::Full => Self {
                xml: options.strip_xml_tags,
                tools: options.strip_builtin_tools,
                identity: true,
            },
        }
    }

    pub(super) fn markers(self) -> bool {
        self.tools || self.identity
    }

    pub(super) fn none(self) -> bool {
        !self.xml && !self.markers()
    }

    fn marker_list(self) -> impl Iterator<Item = &'static Marker> {
        let tools: &'static [Marker] = if self.tools { &TOOL_MARKERS } else { &[] };
        let identity: &'static [Marker] = if self.identity {
            &IDENTITY_MARKERS
        } else {
            &[]
        };
        tools.iter().chain(identity)
    }
}

/// The `i`-th char of `</name>`.
pub(super) fn close_tag_char(name: &str, i: usize) -> Option<char> {
    match i {
        0 => Some('<'),
        1 => Some('/'),
        _ => name
            .as_bytes()
            .get(i - 2)
            .map(|b| char::from(*b))
            .or_else(|| (i == name.len() + 2).then_some('>')),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TagMatch {
    /// Could still be an internal tag.
    Wait,
    /// Is not one.
    NotTag,
    /// A closing or self-closing internal tag: drop it.
    Strip,
    /// An opening internal tag: drop it and the block it opens.
    Open(&'static str),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Decide what `held` (which starts with `<`) is. Only ever decides what no further text
/// could change.
pub(super) fn tag_match(held: &str) -> TagMatch {
    let decided = tag_match_unbounded(held);
    if decided == TagMatch::Wait && held.len() > MAX_TAG_BYTES {
        TagMatch::NotTag
    } else {
        decided
    }
}

fn tag_match_unbounded(held: &str) -> TagMatch {
    let Some(after) = held.strip_prefix('<') else {
        return TagMatch::NotTag;
    };
    let (closing, after) = match after.strip_prefix('/') {
        Some(after) => (true, after),
        None => (false, after),
    };
    let name_len = after.find(|c| !is_name_char(c)).unwrap_or(after.len());
    let (name, rest) = after.split_at(name_len);
    let Some(terminator) = rest.chars().next() else {
        return if INTERNAL_TAGS.iter().any(|tag| tag.starts_with(name)) {
            TagMatch::Wait
        } else {
            TagMatch::NotTag
        };
    };
    let Some(tag) = INTERNAL_TAGS.iter().copied().find(|tag| *tag == name) else {
        return TagMatch::NotTag;
    };
    if closing {
        return if terminator == '>' {
            TagMatch::Strip
        } else {
            TagMatch::NotTag
        };
    }
    match terminator {
        '>' => TagMatch::Open(tag),
        '/' => match rest[1..].chars().next() {
            None => TagMatch::Wait,
            Some('>') => TagMatch::Strip,
            Some(_) => TagMatch::NotTag,
        },
        c if c.is_whitespace() => match rest.find(['<', '>']) {
            None => TagMatch::Wait,
            Some(i) if rest[i..].starts_with('<') => TagMatch::NotTag,
            Some(i) if rest[..i].ends_with('/') => TagMatch::Strip,
            Some(_) => TagMatch::Open(tag),
        },
        _ => TagMatch::NotTag,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineMatch {
    /// Could still be a marker line.
    Wait,
    /// Is not one.
    Keep,
    /// Starts with a prefix marker: drop it and the rest of the line.
    DropRest,
    /// Is a whole-line marker, complete with its `\n` (or the end of the stream): drop it.
    DropWhole,
}

/// Decide what the start of a line `held` is. Only ever decides what no further text could
/// change; `at_end` says no further text comes.
pub(super) fn line_match(held: &str, layers: Layers, at_end: bool) -> LineMatch {
    let rest = held.trim_start_matches([' ', '\t']);
    if held.len() - rest.len() > MAX_MARKER_INDENT {
        return LineMatch::Keep;
    }
    let (body, complete) = match rest.strip_suffix('\n') {
        Some(body) => (body, true),
        None => (rest, at_end),
    };
    let mut possible = false;
    for (text, kind) in layers.marker_list() {
        let could_grow = !complete && text.starts_with(body);
        match kind {
            MarkerKind::Prefix => {
                if body.starts_with(text) {
                    return LineMatch::DropRest;
                }
                possible |= could_grow;
            }
            MarkerKind::Whole => match body.strip_prefix(text) {
                Some(tail)
                    if tail.len() <= MAX_MARKER_INDENT
                        && tail.chars().all(|c| matches!(c, ' ' | '\t' | '\r')) =>
                {
                    if complete {
                        return LineMatch::DropWhole;
                    }
                    possible = true;
                }
                _ => possible |= could_grow,
            },
        }
    }
    if possible {
        LineMatch::Wait
    } else {
        LineMatch::Keep
    }
}
