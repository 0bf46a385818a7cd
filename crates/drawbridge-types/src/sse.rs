//! Server-sent events as OpenAI uses them: `data: <one-line JSON>\n\n`, ending with
//! `data: [DONE]\n\n`. A writer for our streams and a reader for a layer that consumes another
//! layer's stream.

use bytes::{BufMut, Bytes, BytesMut};

/// The last event of every OpenAI stream.
pub const DONE: &str = "[DONE]";

/// Frame one `data:` event. `payload` must be a single line (serde_json never writes a newline).
pub fn data_frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    out.put_slice(b"data: ");
    out.put_slice(payload);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// `data: [DONE]\n\n`.
pub fn done_frame() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// An SSE comment line: ignored by every client, keeps idle connections and proxies alive.
pub fn keepalive_frame() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}

/// One thing an SSE stream said: a complete event's `data`, or a comment line (`: …`), which a
/// Drawbridge layer sends to keep a quiet stream alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Data(String),
    Comment,
}

/// Incremental SSE reader: feed it bytes as they arrive, take out complete `data` payloads.
/// Follows the SSE rules that matter here: lines end in `\n`, `\r\n` or `\r`; an event ends at
/// a blank line; several `data:` lines of one event are joined by `\n`; other fields are
/// skipped, and so are comments ([`SseDecoder::push_items`] reports them).
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    data: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    skip_lf: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes; return the payloads of the events they completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.push_items(chunk)
            .into_iter()
            .filter_map(|item| match item {
                SseItem::Data(data) => Some(data),
                SseItem::Comment => None,
            })
            .collect()
    }

    /// Add bytes; return the events and comment lines they completed, in order.
    pub fn push_items(&mut self, chunk: &[u8]) -> Vec<SseItem> {
        let mut events = Vec::new();
        let mut rest = chunk;
        // An empty chunk says nothing about the `\n` a trailing `\r` may still be waiting for.
        if self.skip_lf && !rest.is_empty() {
            self.skip_lf = false;
            if let Some(after) = rest.strip_prefix(b"\n") {
                rest = after;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, tail) = rest.split_at(pos);
            self.buf.extend_from_slice(line);
            let mut tail = &tail[1..];
            if rest[pos] == b'\r' {
                match tail.first() {
                    Some(b'\n') => tail = &tail[1..],
                    None => self.skip_lf = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.buf);
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            rest = tail;
        }
        self.buf.extend_from_slice(rest);
        events
    }

    fn line(&mut self, line: &[u8]) -> Option<SseItem> {
        if line.is_empty() {
            return self.data.take().map(SseItem::Data);
        }
        if line.starts_with(b":") {
            return Some(SseItem::Comment);
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            let value = String::from_utf8_lossy(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_what_the_sdks_read() {
        assert_eq!(&data_frame(br#"{"a":1}"#)[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&done_frame()[..], b"data: [DONE]\n\n");
    }

    #[test]
    fn decodes_however_the_bytes_are_split() {
        let stream = b"data: {\"a\":1}\n\n: comment\n\nevent: x\ndata: two\ndata: lines\n\ndata:[DONE]\r\n\r\n";
        let whole = SseDecoder::new().push(stream);
        assert_eq!(whole, vec!["{\"a\":1}", "two\nlines", "[DONE]"]);
        for split in 0..stream.len() {
            let mut decoder = SseDecoder::new();
            let mut events = decoder.push(&stream[..split]);
            events.extend(decoder.push(&stream[split..]));
            assert_eq!(events, whole, "split at {split}");
        }
        let mut decoder = SseDecoder::new();
        let byte_by_byte: Vec<String> = stream.iter().flat_map(|b| decoder.push(&[*b])).collect();
        assert_eq!(byte_by_byte, whole);
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_changes_nothing() {
        // Found by the chunking property test: `\r`, then an empty read, then `\n` is one line
        // end, not two (a second one would end an event early).
        let mut decoder = SseDecoder::new();
        let mut events = decoder.push(b"data: x\r");
        events.extend(decoder.push(b""));
        events.extend(decoder.push(b"\ndata: y\n\n"));
        assert_eq!(events, vec!["x\ny"]);
    }

    #[test]
    fn comments_are_reported_in_order_by_push_items() {
        let stream = b": keep-alive\n\ndata: a\n\n: keep-alive\n\n";
        for split in 0..stream.len() {
            let mut decoder = SseDecoder::new();
            let mut items = decoder.push_items(&stream[..split]);
            items.extend(decoder.push_items(&stream[split..]));
            assert_eq!(
                items,
                vec![
                    SseItem::Comment,
                    SseItem::Data("a".into()),
                    SseItem::Comment
                ],
                "split at {split}"
            );
        }
        assert_eq!(
            SseDecoder::new().push(&keepalive_frame()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_unfinished_event_is_held_back() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"data: partial").is_empty());
        assert!(decoder.push(b"\n").is_empty());
        assert_eq!(decoder.push(b"\n"), vec!["partial"]);
    }
}
