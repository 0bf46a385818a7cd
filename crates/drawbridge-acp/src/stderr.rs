//! The last few KiB of a child's stderr, kept for error reports.

use std::collections::VecDeque;

/// How much stderr to keep.
pub(crate) const STDERR_TAIL_BYTES: usize = 4096;

/// A byte ring holding the newest `STDERR_TAIL_BYTES` of a stream.
#[derive(Debug, Default)]
pub(crate) struct StderrTail {
    bytes: VecDeque<u8>,
}

impl StderrTail {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let keep = chunk.len().min(STDERR_TAIL_BYTES);
        let chunk = &chunk[chunk.len() - keep..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(STDERR_TAIL_BYTES);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    pub(crate) fn text(&self) -> String {
        let (front, back) = self.bytes.as_slices();
        let mut bytes = Vec::with_capacity(self.bytes.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(back);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes() {
        let mut tail = StderrTail::default();
        tail.push(b"hello ");
        tail.push(b"world");
        assert_eq!(tail.text(), "hello world");
        tail.push(&vec![b'x'; STDERR_TAIL_BYTES]);
        tail.push(b"end");
        let text = tail.text();
        assert_eq!(text.len(), STDERR_TAIL_BYTES);
        assert!(text.ends_with("xend"));
        tail.push(&vec![b'y'; STDERR_TAIL_BYTES * 2]);
        assert_eq!(tail.text(), "y".repeat(STDERR_TAIL_BYTES));
    }
}
