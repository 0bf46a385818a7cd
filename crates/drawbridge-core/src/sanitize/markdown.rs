//! Markdown code context (fenced blocks, inline code spans), tracked char by char so that
//! nothing is stripped inside code.

/// Whether `text` ends inside a fenced code block, by the rules of the `sanitize` module docs.
pub(crate) fn ends_inside_code_fence(text: &str) -> bool {
    let mut md = Markdown::default();
    for c in text.chars() {
        md.feed(c);
    }
    md.settle();
    md.fence.is_some() && !md.close_candidate
}

/// Where the current line is, for fence detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinePos {
    /// Only this many spaces (at most 3) so far.
    Indent(u8),
    /// A run of `ch` after the indent.
    Run { ch: char, n: usize },
    /// Past the point where a fence could start.
    Rest,
}

impl Default for LinePos {
    fn default() -> Self {
        Self::Indent(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fence {
    ch: char,
    n: usize,
}

/// Markdown code context (fenced blocks, inline code spans) of a text fed char by char.
#[derive(Debug, Clone, Default)]
pub(super) struct Markdown {
    line: LinePos,
    pub(super) fence: Option<Fence>,
    /// This line may close the open fence (a long enough run, nothing but whitespace since).
    close_candidate: bool,
    /// Backticks in the current run, outside a fence and not at the start of the line.
    tick_run: usize,
    /// The length of the run that opened the current inline code span, or 0.
    inline_ticks: usize,
}

impl Markdown {
    pub(super) fn feed(&mut self, c: char) {
        if c == '\n' {
            self.settle();
            if self.close_candidate {
                self.fence = None;
            }
            self.line = LinePos::Indent(0);
            self.close_candidate = false;
            self.inline_ticks = 0;
            return;
        }
        match self.line {
            LinePos::Indent(spaces) => {
                if c == ' ' && spaces < 3 {
                    self.line = LinePos::Indent(spaces + 1);
                    return;
                }
                if c == '`' || c == '~' {
                    self.line = LinePos::Run { ch: c, n: 1 };
                    return;
                }
                self.line = LinePos::Rest;
            }
            LinePos::Run { ch, n } => {
                if c == ch {
                    self.line = LinePos::Run { ch, n: n + 1 };
                    return;
                }
                self.line = LinePos::Rest;
                self.end_line_run(ch, n);
            }
            LinePos::Rest => {}
        }
        if self.fence.is_some() {
            if self.close_candidate && !c.is_whitespace() {
                self.close_candidate = false;
            }
        } else if c == '`' {
            self.tick_run += 1;
        } else {
            self.end_tick_run();
        }
    }

    /// Resolve a pending run of fence characters or backticks, as the next char (if it is not
    /// one of them) would.
    pub(super) fn settle(&mut self) {
        if let LinePos::Run { ch, n } = self.line {
            self.line = LinePos::Rest;
            self.end_line_run(ch, n);
        }
        self.end_tick_run();
    }

    fn end_line_run(&mut self, ch: char, n: usize) {
        if n >= 3 {
            match self.fence {
                None => self.fence = Some(Fence { ch, n }),
                Some(fence) if fence.ch == ch && n >= fence.n => self.close_candidate = true,
                Some(_) => {}
            }
        } else if ch == '`' && self.fence.is_none() {
            self.inline_run(n);
        }
    }

    fn end_tick_run(&mut self) {
        let n = std::mem::take(&mut self.tick_run);
        if n > 0 {
            self.inline_run(n);
        }
    }

    fn inline_run(&mut self, n: usize) {
        if self.inline_ticks == 0 {
            self.inline_ticks = n;
        } else if self.inline_ticks == n {
            self.inline_ticks = 0;
        }
    }

    /// Inside code (call after `settle`).
    pub(super) fn in_code(&self) -> bool {
        self.fence.is_some() || self.inline_ticks > 0
    }
}
