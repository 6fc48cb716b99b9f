//! Follows the framing of a multipart body as it streams in, to bound what is not part content
//! (part headers, preamble, epilogue): a parser must hold such bytes whole until they end.
//!
//! The states mirror multer's parser: the first boundary may come after a preamble; after a
//! boundary, `--` ends the form, else transport padding and a line end lead to the part's
//! headers, which end at an empty line; the content ends at CRLF and the next boundary.

use thiserror::Error;

/// Bytes between the end of a boundary and the end of the part headers that follow it. Real
/// clients send one or two header lines (`Content-Disposition` with a file name, `Content-Type`):
/// a few hundred bytes.
pub const MAX_PART_HEADER_BYTES: u64 = 8 * 1024;
/// Bytes outside part contents in a whole form: every part's headers, preamble and epilogue.
pub const MAX_FORM_OVERHEAD_BYTES: u64 = 64 * 1024;

/// A multipart body carries more than its limits allow outside part contents.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    /// One part's headers are too long.
    #[error("the multipart headers are larger than {MAX_PART_HEADER_BYTES} bytes for one part")]
    PartHeaders,
    /// Headers, preamble and epilogue together are too long.
    #[error(
        "the multipart headers, preamble and epilogue are larger than \
         {MAX_FORM_OVERHEAD_BYTES} bytes for the whole form"
    )]
    FormOverhead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Preamble,
    /// Just after a boundary; `dash` once one `-` of a closing `--` has been seen.
    AfterBoundary { dash: bool },
    /// Spaces and tabs after a boundary.
    Padding,
    /// The line end after a boundary (`left` bytes of it still to come).
    LineEnd { left: u8 },
    /// Part headers, up to an empty line.
    Headers,
    /// Part content, up to the next boundary.
    Content,
    /// After the closing boundary.
    Epilogue,
}

/// Tracks where a multipart body is, counting the bytes that are not part content.
#[derive(Debug)]
pub struct Framing {
    state: State,
    first_boundary: Vec<u8>,
    delimiter: Vec<u8>,
    /// The last bytes seen in a searching state, which may begin a match the next chunk ends.
    carry: Vec<u8>,
    part_overhead: u64,
    form_overhead: u64,
}

const HEADERS_END: &[u8] = b"\r\n\r\n";

/// What a searching state looks for.
#[derive(Debug, Clone, Copy)]
enum Needle {
    FirstBoundary,
    Delimiter,
    HeadersEnd,
}

impl Framing {
    /// Starts at the beginning of a body whose parts are separated by `boundary`.
    pub fn new(boundary: &str) -> Self {
        Self {
            state: State::Preamble,
            first_boundary: format!("--{boundary}").into_bytes(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            carry: Vec::new(),
            part_overhead: 0,
            form_overhead: 0,
        }
    }

    /// Follows the next piece of the body.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), FramingError> {
        while !bytes.is_empty() {
            let (used, next) = self.step(bytes);
            if self.state != State::Content {
                self.part_overhead += used as u64;
                self.form_overhead += used as u64;
            }
            if self.part_overhead > MAX_PART_HEADER_BYTES {
                return Err(FramingError::PartHeaders);
            }
            if self.form_overhead > MAX_FORM_OVERHEAD_BYTES {
                return Err(FramingError::FormOverhead);
            }
            if let State::AfterBoundary { dash: false } = next {
                self.part_overhead = 0;
            }
            self.state = next;
            bytes = &bytes[used..];
        }
        Ok(())
    }

    /// Consumes `bytes` up to the end of `needle` (and moves to `found`), or all of them.
    fn find(&mut self, needle: Needle, found: State, bytes: &[u8]) -> (usize, State) {
        let needle = match needle {
            Needle::FirstBoundary => &self.first_boundary[..],
            Needle::Delimiter => &self.delimiter[..],
            Needle::HeadersEnd => HEADERS_END,
        };
        match search(&mut self.carry, needle, bytes) {
            Some(end) => (end, found),
            None => (bytes.len(), self.state),
        }
    }

    /// Consumes a prefix of `bytes` in the current state; returns its length and the next state.
    fn step(&mut self, bytes: &[u8]) -> (usize, State) {
        let after_boundary = State::AfterBoundary { dash: false };
        match self.state {
            State::Preamble => self.find(Needle::FirstBoundary, after_boundary, bytes),
            State::Content => self.find(Needle::Delimiter, after_boundary, bytes),
            State::Headers => self.find(Needle::HeadersEnd, State::Content, bytes),
            State::AfterBoundary { dash } => match (dash, bytes[0]) {
                (false, b'-') => (1, State::AfterBoundary { dash: true }),
                (true, b'-') => (1, State::Epilogue),
                // Not a closing boundary: multer reads padding and a line end (and fails on a
                // lone dash, so what follows one does not matter).
                (true, _) => (0, State::Headers),
                (false, _) => (0, State::Padding),
            },
            State::Padding => match bytes.iter().position(|&b| b != b' ' && b != b'\t') {
                Some(at) => (at, State::LineEnd { left: 2 }),
                None => (bytes.len(), State::Padding),
            },
            State::LineEnd { left } => {
                let used = bytes.len().min(usize::from(left));
                let left = left - used as u8;
                let next = if left == 0 {
                    State::Headers
                } else {
                    State::LineEnd { left }
                };
                (used, next)
            }
            State::Epilogue => (bytes.len(), State::Epilogue),
        }
    }
}

/// Looks for `needle` in the bytes searched since the last match (`carry` holds the last of
/// them) followed by `bytes`; returns the offset in `bytes` just past the match, or else keeps in
/// `carry` the tail that may begin one.
fn search(carry: &mut Vec<u8>, needle: &[u8], bytes: &[u8]) -> Option<usize> {
    let keep = needle.len() - 1;
    if !carry.is_empty() {
        // A match that starts in `carry` ends within the first `keep` bytes of `bytes`.
        let mut joined = carry.clone();
        joined.extend_from_slice(&bytes[..bytes.len().min(keep)]);
        if let Some(at) = memchr::memmem::find(&joined, needle) {
            let end = at + needle.len() - carry.len();
            carry.clear();
            return Some(end);
        }
    }
    if let Some(at) = memchr::memmem::find(bytes, needle) {
        carry.clear();
        return Some(at + needle.len());
    }
    carry.extend_from_slice(&bytes[bytes.len().saturating_sub(keep)..]);
    let excess = carry.len().saturating_sub(keep);
    carry.drain(..excess);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part(headers: &str, content: &[u8]) -> Vec<u8> {
        let mut part = format!("--B\r\n{headers}\r\n\r\n").into_bytes();
        part.extend_from_slice(content);
        part.extend_from_slice(b"\r\n");
        part
    }

    fn feed_in_pieces(body: &[u8], piece: usize) -> Result<Framing, FramingError> {
        let mut framing = Framing::new("B");
        for chunk in body.chunks(piece) {
            framing.feed(chunk)?;
        }
        Ok(framing)
    }

    proptest! {
        #[test]
        fn large_contents_with_near_boundaries_pass_in_any_pieces(
            piece in 1usize..200,
            filler in prop::sample::select(vec![b'x', b'\r', b'\n', b'-', b'B']),
        ) {
            let content = vec![filler; 100_000];
            let mut body = part("Content-Disposition: form-data; name=\"file\"", &content);
            body.extend_from_slice(&part("Content-Disposition: form-data; name=\"b\"", b"\r\n--\r\n-B"));
            body.extend_from_slice(b"--B--\r\nepilogue");
            let framing = feed_in_pieces(&body, piece).unwrap();
            prop_assert_eq!(framing.state, State::Epilogue);
            prop_assert!(framing.form_overhead < 300, "{}", framing.form_overhead);
        }

        #[test]
        fn endless_headers_fail_in_any_pieces(piece in 1usize..5000) {
            let mut body = b"--B\r\nX-Endless: ".to_vec();
            body.extend(std::iter::repeat_n(b'x', 2 * MAX_PART_HEADER_BYTES as usize));
            prop_assert_eq!(feed_in_pieces(&body, piece).unwrap_err(), FramingError::PartHeaders);
        }
    }

    #[test]
    fn many_parts_share_one_budget_for_the_form() {
        let headers = format!("X-Pad: {}", "p".repeat(4000));
        let body: Vec<u8> = (0..20).flat_map(|_| part(&headers, b"c")).collect();
        assert_eq!(
            feed_in_pieces(&body, 4096).unwrap_err(),
            FramingError::FormOverhead
        );
        let preamble = vec![b'x'; 2 * MAX_FORM_OVERHEAD_BYTES as usize];
        assert!(feed_in_pieces(&preamble, 10_000).is_err());
    }

    #[test]
    fn padding_after_a_boundary_counts_as_headers() {
        let mut body = b"--B".to_vec();
        body.extend(std::iter::repeat_n(
            b' ',
            2 * MAX_PART_HEADER_BYTES as usize,
        ));
        assert_eq!(
            feed_in_pieces(&body, 1000).unwrap_err(),
            FramingError::PartHeaders
        );
    }
}
