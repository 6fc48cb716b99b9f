//! Incremental URL-safe base64 with padding, as Fernet tokens are written.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;

use super::CryptoError;

/// Encodes a byte stream piece by piece; the output equals `URL_SAFE.encode` of the whole input.
#[derive(Debug, Default)]
pub struct Base64Encoder {
    carry: Vec<u8>,
}

impl Base64Encoder {
    /// Appends the text for every complete 3-byte group seen so far to `out`.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if !self.carry.is_empty() {
            let take = (3 - self.carry.len()).min(input.len());
            self.carry.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.carry.len() < 3 {
                return;
            }
            encode_into(&self.carry, out);
            self.carry.clear();
        }
        let whole = input.len() - input.len() % 3;
        encode_into(&input[..whole], out);
        self.carry.extend_from_slice(&input[whole..]);
    }

    /// Appends the final, padded group.
    pub fn finish(self, out: &mut Vec<u8>) {
        encode_into(&self.carry, out);
    }
}

fn encode_into(input: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + input.len().div_ceil(3) * 4, 0);
    let written = URL_SAFE
        .encode_slice(input, &mut out[start..])
        .expect("output sized for the input");
    out.truncate(start + written);
}

/// Decodes URL-safe, padded base64 text piece by piece, rejecting anything else.
#[derive(Debug, Default)]
pub struct Base64Decoder {
    pending: Vec<u8>,
}

impl Base64Decoder {
    /// Appends the bytes of every quantum that cannot be the last one to `out`.
    pub fn update(&mut self, text: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.pending.extend_from_slice(text);
        // The last complete quantum may carry padding, so it waits for `finish`.
        let len = self.pending.len();
        let ready = if len % 4 == 0 {
            len.saturating_sub(4)
        } else {
            len - len % 4
        };
        let body = &self.pending[..ready];
        if body.contains(&b'=') {
            return Err(CryptoError::MalformedToken(
                "padding before the end of the base64 text",
            ));
        }
        decode_into(body, out)?;
        self.pending.drain(..ready);
        Ok(())
    }

    /// Decodes the final quantum; fails when the text did not end on a padded quantum.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if self.pending.len() % 4 != 0 {
            return Err(CryptoError::MalformedToken("invalid base64"));
        }
        decode_into(&self.pending, out)
    }
}

fn decode_into(text: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
    let start = out.len();
    out.resize(start + text.len() / 4 * 3, 0);
    let written = URL_SAFE
        .decode_slice_unchecked(text, &mut out[start..])
        .map_err(|_| CryptoError::MalformedToken("invalid base64"))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encoder_matches_one_shot(data in proptest::collection::vec(any::<u8>(), 0..300), cuts in proptest::collection::vec(0usize..300, 0..6)) {
            let mut encoder = Base64Encoder::default();
            let mut out = Vec::new();
            let mut rest = &data[..];
            for cut in cuts {
                let (head, tail) = rest.split_at(cut.min(rest.len()));
                encoder.update(head, &mut out);
                rest = tail;
            }
            encoder.update(rest, &mut out);
            encoder.finish(&mut out);
            prop_assert_eq!(out, URL_SAFE.encode(&data).into_bytes());
        }

        #[test]
        fn decoder_inverts_encoder(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..400) {
            let text = URL_SAFE.encode(&data).into_bytes();
            let (head, tail) = text.split_at(cut.min(text.len()));
            let mut decoder = Base64Decoder::default();
            let mut out = Vec::new();
            decoder.update(head, &mut out).unwrap();
            decoder.update(tail, &mut out).unwrap();
            decoder.finish(&mut out).unwrap();
            prop_assert_eq!(out, data);
        }

        #[test]
        fn decoder_never_panics(text in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut decoder = Base64Decoder::default();
            let mut out = Vec::new();
            let _ = decoder.update(&text, &mut out).and_then(|()| decoder.finish(&mut out));
        }
    }

    #[test]
    fn padding_inside_the_text_is_rejected() {
        let mut decoder = Base64Decoder::default();
        let mut out = Vec::new();
        let result = decoder
            .update(b"AA==AAAA", &mut out)
            .and_then(|()| decoder.finish(&mut out));
        assert!(result.is_err());
    }
}
