//! The `Range` request header (RFC 9110 §14): one byte range, or the whole body.

use std::ops::Range;

use axum::http::HeaderValue;

/// What a `Range` header asks for, against a body of known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No header, several ranges, or a malformed header (which RFC 9110 lets a server ignore).
    Full,
    /// One satisfiable range (half-open, non-empty).
    Partial(Range<u64>),
    /// A single range that lies wholly past the end.
    Unsatisfiable,
}

impl RangeRequest {
    /// Interprets `header` for a body of `len` bytes.
    pub fn parse(header: Option<&HeaderValue>, len: u64) -> Self {
        let Some(spec) = header
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().strip_prefix("bytes="))
        else {
            return RangeRequest::Full;
        };
        if spec.contains(',') {
            return RangeRequest::Full;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return RangeRequest::Full;
        };
        let number = |text: &str| -> Option<u64> {
            let text = text.trim();
            (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse().ok())
                .flatten()
        };
        match (number(first), number(last), last.trim().is_empty()) {
            // bytes=-n: the last n bytes.
            (None, Some(suffix), _) if first.trim().is_empty() => {
                if suffix == 0 || len == 0 {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial(len - suffix.min(len)..len)
                }
            }
            // bytes=a-
            (Some(start), None, true) => Self::from_start(start, len, len),
            // bytes=a-b
            (Some(start), Some(end), _) if start <= end => {
                Self::from_start(start, end.saturating_add(1).min(len), len)
            }
            _ => RangeRequest::Full,
        }
    }

    fn from_start(start: u64, end: u64, len: u64) -> Self {
        if start >= len {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Partial(start..end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str, len: u64) -> RangeRequest {
        RangeRequest::parse(Some(&HeaderValue::from_str(text).unwrap()), len)
    }

    #[test]
    fn the_three_forms() {
        assert_eq!(parse("bytes=0-9", 100), RangeRequest::Partial(0..10));
        assert_eq!(parse("bytes=90-200", 100), RangeRequest::Partial(90..100));
        assert_eq!(parse("bytes=10-", 100), RangeRequest::Partial(10..100));
        assert_eq!(parse("bytes=-10", 100), RangeRequest::Partial(90..100));
        assert_eq!(parse("bytes=-500", 100), RangeRequest::Partial(0..100));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=100-200", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_mean_the_whole_body() {
        for text in [
            "bytes=5-2",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
        ] {
            assert_eq!(parse(text, 100), RangeRequest::Full, "{text}");
        }
        assert_eq!(RangeRequest::parse(None, 100), RangeRequest::Full);
    }

    proptest! {
        #[test]
        fn partial_ranges_are_non_empty_and_inside_the_body(text in "bytes=[0-9]{0,4}-[0-9]{0,4}", len in 0u64..5000) {
            if let RangeRequest::Partial(range) = parse(&text, len) {
                prop_assert!(range.start < range.end && range.end <= len);
            }
        }
    }
}
