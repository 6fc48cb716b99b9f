//! Fernet tokens (the Python proxy's blob format and the `API_KEY` format), read and written in
//! streaming passes so that a multi-gigabyte token never sits in memory.
//!
//! Token: `0x80 | timestamp (u64 BE) | IV (16) | AES-128-CBC PKCS#7 ciphertext | HMAC-SHA256 (32)`,
//! stored as URL-safe base64 text. Opening takes two passes: [`FernetVerifier`] checks the MAC
//! over the whole token (and learns the plaintext length), then [`FernetDecryptor`] decrypts and
//! checks the MAC again before it releases the last plaintext block.

use std::ops::Range;

use aws_lc_rs::cipher::{
    AES_128, DecryptingKey, DecryptionContext, EncryptionContext, StreamingDecryptingKey,
    StreamingEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;

use super::CryptoError;
use super::base64_stream::{Base64Decoder, Base64Encoder};
use super::data_key::DataKey;

/// The text every Fernet token starts with (version byte 0x80 and a timestamp below 2^40).
pub const TOKEN_TEXT_PREFIX: &[u8] = b"gAAAAA";

const VERSION: u8 = 0x80;
const BLOCK_LEN: usize = 16;
// Where each header field lies: the table in docs/FORMAT.md.
const VERSION_AT: usize = 0;
const TIMESTAMP_AT: Range<usize> = 1..9;
const IV_AT: Range<usize> = 9..HEADER_LEN;
const HEADER_LEN: usize = 1 + 8 + BLOCK_LEN;
const MAC_LEN: usize = 32;
/// Bytes held back while verifying: the MAC and the two ciphertext blocks that fix the padding.
const TAIL_LEN: usize = MAC_LEN + 2 * BLOCK_LEN;

/// Encrypts a plaintext stream into Fernet token text.
pub struct FernetWriter {
    mac: hmac::Context,
    cipher: StreamingEncryptingKey,
    text: Base64Encoder,
    scratch: Vec<u8>,
}

impl FernetWriter {
    /// Starts a token with the given IV and timestamp, appending the header's text to `out`.
    pub fn new(
        key: &DataKey,
        iv: [u8; BLOCK_LEN],
        timestamp: u64,
        out: &mut Vec<u8>,
    ) -> Result<Self, CryptoError> {
        let cipher_key = UnboundCipherKey::new(&AES_128, key.fernet_encryption_key())?;
        let cipher = StreamingEncryptingKey::less_safe_cbc_pkcs7(
            cipher_key,
            EncryptionContext::Iv128(iv.into()),
        )?;
        let mut writer = Self {
            mac: hmac::Context::with_key(&hmac::Key::new(
                hmac::HMAC_SHA256,
                key.fernet_signing_key(),
            )),
            cipher,
            text: Base64Encoder::default(),
            scratch: Vec::new(),
        };
        let mut header = [0u8; HEADER_LEN];
        header[VERSION_AT] = VERSION;
        header[TIMESTAMP_AT].copy_from_slice(&timestamp.to_be_bytes());
        header[IV_AT].copy_from_slice(&iv);
        writer.emit(&header, out);
        Ok(writer)
    }

    /// Starts a token with a random IV and the current time, as Python's `Fernet.encrypt` does.
    pub fn start(key: &DataKey, out: &mut Vec<u8>) -> Result<Self, CryptoError> {
        let mut iv = [0u8; BLOCK_LEN];
        aws_lc_rs::rand::fill(&mut iv)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        Self::new(key, iv, now, out)
    }

    /// Encrypts `plaintext`, appending token text to `out`.
    pub fn update(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(plaintext.len() + BLOCK_LEN, 0);
        let written = self
            .cipher
            .less_safe_update(plaintext, &mut scratch)?
            .written()
            .len();
        self.emit(&scratch[..written], out);
        self.scratch = scratch;
        Ok(())
    }

    /// Pads, encrypts the last block and appends it and the MAC to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let mut last = [0u8; BLOCK_LEN];
        let cipher = self.cipher;
        let (_, update) = cipher.finish(&mut last)?;
        let last_len = update.written().len();
        self.mac.update(&last[..last_len]);
        self.text.update(&last[..last_len], out);
        let tag = self.mac.sign();
        self.text.update(tag.as_ref(), out);
        self.text.finish(out);
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.mac.update(bytes);
        self.text.update(bytes, out);
    }
}

/// Encrypts a whole (small) plaintext into token text.
pub fn encrypt(key: &DataKey, plaintext: &[u8]) -> Result<String, CryptoError> {
    let mut out = Vec::new();
    let mut writer = FernetWriter::start(key, &mut out)?;
    writer.update(plaintext, &mut out)?;
    writer.finish(&mut out)?;
    Ok(String::from_utf8(out).expect("base64 is ASCII"))
}

/// Opens a whole (small) token, checking its MAC first. No TTL applies.
pub fn decrypt(key: &DataKey, token: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut verifier = FernetVerifier::new(key);
    verifier.update(token)?;
    let verified = verifier.finish()?;
    let mut decryptor = FernetDecryptor::new(key, &verified)?;
    let mut plaintext = Vec::new();
    decryptor.update(token, &mut plaintext)?;
    decryptor.finish(&mut plaintext)?;
    Ok(plaintext)
}

/// What the first pass learned about a token whose MAC is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Seconds since the Unix epoch when the token was made.
    pub timestamp: u64,
    /// The IV of the CBC encryption.
    pub iv: [u8; BLOCK_LEN],
    /// Length of the ciphertext between header and MAC.
    pub ciphertext_len: u64,
    /// Length of the plaintext the token decrypts to.
    pub plaintext_len: u64,
}

/// First pass: checks the MAC of token text fed in pieces, keeping only a fixed-size tail.
pub struct FernetVerifier {
    key: DataKey,
    mac: hmac::Context,
    text: Base64Decoder,
    header: Vec<u8>,
    tail: Vec<u8>,
    decoded_len: u64,
    scratch: Vec<u8>,
}

impl FernetVerifier {
    /// Starts verifying a token under `key`.
    pub fn new(key: &DataKey) -> Self {
        Self {
            key: key.clone(),
            mac: hmac::Context::with_key(&hmac::Key::new(
                hmac::HMAC_SHA256,
                key.fernet_signing_key(),
            )),
            text: Base64Decoder::default(),
            header: Vec::with_capacity(HEADER_LEN),
            tail: Vec::with_capacity(2 * TAIL_LEN),
            decoded_len: 0,
            scratch: Vec::new(),
        }
    }

    /// Feeds the next piece of token text.
    pub fn update(&mut self, text: &[u8]) -> Result<(), CryptoError> {
        let mut decoded = std::mem::take(&mut self.scratch);
        decoded.clear();
        self.text.update(text, &mut decoded)?;
        self.absorb(&decoded)?;
        self.scratch = decoded;
        Ok(())
    }

    /// Checks the MAC and the padding; returns what the decrypting pass needs.
    pub fn finish(mut self) -> Result<VerifiedToken, CryptoError> {
        let mut decoded = Vec::new();
        std::mem::take(&mut self.text).finish(&mut decoded)?;
        self.absorb(&decoded)?;
        let min_len = (HEADER_LEN + BLOCK_LEN + MAC_LEN) as u64;
        if self.decoded_len < min_len {
            return Err(CryptoError::MalformedToken("too short"));
        }
        let ciphertext_len = self.decoded_len - (HEADER_LEN + MAC_LEN) as u64;
        if ciphertext_len % BLOCK_LEN as u64 != 0 {
            return Err(CryptoError::MalformedToken(
                "ciphertext is not a whole number of blocks",
            ));
        }
        // The tail holds exactly the last TAIL_LEN bytes; with one ciphertext block the block
        // before it is the IV, which sits at the same place in the header.
        let (blocks, tag) = self.tail.split_at(2 * BLOCK_LEN);
        self.mac.update(blocks);
        let expected = self.mac.sign();
        verify_slices_are_equal(expected.as_ref(), tag)
            .map_err(|_| CryptoError::AuthenticationFailed)?;
        let padding = last_block_padding(&self.key, blocks)?;
        Ok(VerifiedToken {
            timestamp: u64::from_be_bytes(self.header[TIMESTAMP_AT].try_into().expect("8 bytes")),
            iv: self.header[IV_AT].try_into().expect("16 bytes"),
            ciphertext_len,
            plaintext_len: ciphertext_len - padding as u64,
        })
    }

    fn absorb(&mut self, decoded: &[u8]) -> Result<(), CryptoError> {
        if self.header.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.header.len()).min(decoded.len());
            self.header.extend_from_slice(&decoded[..take]);
            if self
                .header
                .get(VERSION_AT)
                .is_some_and(|&version| version != VERSION)
            {
                return Err(CryptoError::MalformedToken("unknown version"));
            }
        }
        self.decoded_len += decoded.len() as u64;
        self.tail.extend_from_slice(decoded);
        if self.tail.len() > TAIL_LEN {
            let excess = self.tail.len() - TAIL_LEN;
            self.mac.update(&self.tail[..excess]);
            self.tail.drain(..excess);
        }
        Ok(())
    }
}

/// Decrypts the last ciphertext block (CBC with the block before it as IV) and checks its padding.
fn last_block_padding(key: &DataKey, blocks: &[u8]) -> Result<usize, CryptoError> {
    let (previous, last) = blocks.split_at(BLOCK_LEN);
    let previous: [u8; BLOCK_LEN] = previous.try_into().expect("one block");
    let mut block: [u8; BLOCK_LEN] = last.try_into().expect("one block");
    let cipher = DecryptingKey::cbc(UnboundCipherKey::new(
        &AES_128,
        key.fernet_encryption_key(),
    )?)?;
    let plain = cipher.decrypt(&mut block, DecryptionContext::Iv128(previous.into()))?;
    let padding = usize::from(plain[BLOCK_LEN - 1]);
    let valid = (1..=BLOCK_LEN).contains(&padding)
        && plain[BLOCK_LEN - padding..]
            .iter()
            .all(|&byte| usize::from(byte) == padding);
    if valid {
        Ok(padding)
    } else {
        Err(CryptoError::Corrupt("invalid padding"))
    }
}

/// Characters at the end of a token's text that [`check_key_by_padding`] reads: 23 base64
/// quanta, the 64 bytes of the last two ciphertext blocks and the MAC with room for padding.
pub const KEY_CHECK_TEXT_LEN: u64 = 92;

/// Checks cheaply, from the last [`KEY_CHECK_TEXT_LEN`] characters of a token's text, whether
/// `key` can be its key: the last block must decrypt to valid PKCS#7 padding, which a wrong key
/// fails 255 times in 256. Passing proves nothing (the MAC pass decides); failing is final, so a
/// wrong key is refused without reading a whole blob.
pub fn check_key_by_padding(key: &DataKey, tail_text: &[u8]) -> Result<(), CryptoError> {
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE, tail_text)
        .map_err(|_| CryptoError::MalformedToken("invalid base64"))?;
    let blocks_start = decoded
        .len()
        .checked_sub(MAC_LEN + 2 * BLOCK_LEN)
        .ok_or(CryptoError::MalformedToken("too short"))?;
    last_block_padding(key, &decoded[blocks_start..decoded.len() - MAC_LEN])
        .map(|_| ())
        .map_err(|_| CryptoError::AuthenticationFailed)
}

/// Second pass: decrypts token text whose MAC a [`FernetVerifier`] has already checked, and
/// checks the MAC again, since the stored token may have changed since the first pass. The last
/// plaintext block is held back until that check passes, so an altered token can never be
/// mistaken for a complete one.
pub struct FernetDecryptor {
    cipher: StreamingDecryptingKey,
    mac: hmac::Context,
    text: Base64Decoder,
    header_left: usize,
    ciphertext_left: u64,
    tag: Vec<u8>,
    held: Vec<u8>,
    decoded: Vec<u8>,
    scratch: Vec<u8>,
}

impl FernetDecryptor {
    /// Prepares to decrypt the token that `verified` describes.
    pub fn new(key: &DataKey, verified: &VerifiedToken) -> Result<Self, CryptoError> {
        let cipher_key = UnboundCipherKey::new(&AES_128, key.fernet_encryption_key())?;
        let cipher = StreamingDecryptingKey::cbc_pkcs7(
            cipher_key,
            DecryptionContext::Iv128(verified.iv.into()),
        )?;
        Ok(Self {
            cipher,
            mac: hmac::Context::with_key(&hmac::Key::new(
                hmac::HMAC_SHA256,
                key.fernet_signing_key(),
            )),
            text: Base64Decoder::default(),
            header_left: HEADER_LEN,
            ciphertext_left: verified.ciphertext_len,
            tag: Vec::with_capacity(MAC_LEN),
            held: Vec::with_capacity(2 * BLOCK_LEN),
            decoded: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Feeds the next piece of token text, appending plaintext to `out` (all but the last
    /// block seen so far).
    pub fn update(&mut self, text: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.decoded.clear();
        self.text.update(text, &mut self.decoded)?;
        let decoded = std::mem::take(&mut self.decoded);
        self.decrypt(&decoded, out)?;
        self.decoded = decoded;
        Ok(())
    }

    /// Decrypts the rest, checks the MAC and only then appends the held-back plaintext.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let mut decoded = Vec::new();
        std::mem::take(&mut self.text).finish(&mut decoded)?;
        self.decrypt(&decoded, out)?;
        if self.ciphertext_left != 0 || self.tag.len() != MAC_LEN {
            return Err(CryptoError::Corrupt(
                "token shorter than when it was verified",
            ));
        }
        let expected = self.mac.sign();
        verify_slices_are_equal(expected.as_ref(), &self.tag)
            .map_err(|_| CryptoError::AuthenticationFailed)?;
        let mut last = [0u8; BLOCK_LEN];
        let written = self
            .cipher
            .finish(&mut last)
            .map_err(|_| CryptoError::Corrupt("invalid padding"))?
            .written()
            .len();
        out.extend_from_slice(&self.held);
        out.extend_from_slice(&last[..written]);
        Ok(())
    }

    fn decrypt(&mut self, mut decoded: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let header = self.header_left.min(decoded.len());
        self.header_left -= header;
        self.mac.update(&decoded[..header]);
        decoded = &decoded[header..];
        let take = usize::try_from(self.ciphertext_left)
            .unwrap_or(usize::MAX)
            .min(decoded.len());
        self.ciphertext_left -= take as u64;
        let (ciphertext, tag) = decoded.split_at(take);
        if self.tag.len() + tag.len() > MAC_LEN {
            return Err(CryptoError::Corrupt(
                "token longer than when it was verified",
            ));
        }
        self.tag.extend_from_slice(tag);
        self.mac.update(ciphertext);
        self.scratch.resize(ciphertext.len() + BLOCK_LEN, 0);
        let update = self
            .cipher
            .less_safe_update(ciphertext, &mut self.scratch)?;
        let plain = update.written();
        // Release all but the last block: should the MAC fail, the body must stay incomplete
        // even when the final ciphertext block is nothing but padding.
        self.held.extend_from_slice(plain);
        let release = self.held.len().saturating_sub(BLOCK_LEN);
        out.extend_from_slice(&self.held[..release]);
        self.held.drain(..release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> DataKey {
        DataKey::from_bytes([7; 32])
    }

    #[test]
    fn header_fields_lie_where_the_format_document_says() {
        assert_eq!(VERSION_AT, 0);
        assert_eq!(TIMESTAMP_AT.start, VERSION_AT + 1);
        assert_eq!(IV_AT.start, TIMESTAMP_AT.end);
        let format = include_str!("../../docs/FORMAT.md");
        for (offset, len) in [(VERSION_AT, 1), (TIMESTAMP_AT.start, 8), (IV_AT.start, 16)] {
            let row = format!("| {offset} | {len} |");
            assert!(format.contains(&row), "docs/FORMAT.md lacks {row}");
        }
        assert_eq!(IV_AT.len(), BLOCK_LEN);
    }

    #[test]
    fn round_trip_of_every_length_around_a_block() {
        for len in 0..50 {
            let plaintext: Vec<u8> = (0..len as u8).collect();
            let token = encrypt(&key(), &plaintext).unwrap();
            assert!(token.as_bytes().starts_with(TOKEN_TEXT_PREFIX));
            assert_eq!(decrypt(&key(), token.as_bytes()).unwrap(), plaintext);
        }
    }

    #[test]
    fn verifier_reports_the_plaintext_length() {
        let token = encrypt(&key(), &[1; 37]).unwrap();
        let mut verifier = FernetVerifier::new(&key());
        verifier.update(token.as_bytes()).unwrap();
        assert_eq!(verifier.finish().unwrap().plaintext_len, 37);
    }

    #[test]
    fn wrong_key_fails_authentication() {
        let token = encrypt(&key(), b"secret").unwrap();
        let other = DataKey::from_bytes([8; 32]);
        assert_eq!(
            decrypt(&other, token.as_bytes()),
            Err(CryptoError::AuthenticationFailed)
        );
    }

    /// Verifies `token`, then runs the second pass over `second` (the token as read again);
    /// returns the plaintext released before `finish` and the result of `finish`.
    fn second_pass(token: &[u8], second: &[u8]) -> (usize, Result<Vec<u8>, CryptoError>) {
        let mut verifier = FernetVerifier::new(&key());
        verifier.update(token).unwrap();
        let verified = verifier.finish().unwrap();
        let mut decryptor = FernetDecryptor::new(&key(), &verified).unwrap();
        let mut out = Vec::new();
        if let Err(error) = decryptor.update(second, &mut out) {
            return (out.len(), Err(error));
        }
        let released = out.len();
        (released, decryptor.finish(&mut out).map(|()| out))
    }

    #[test]
    fn a_token_altered_after_verification_fails_the_second_pass_before_its_last_block() {
        for len in [1, 15, 16, 17, 32, 100] {
            let plaintext = vec![3u8; len];
            let token = encrypt(&key(), &plaintext).unwrap().into_bytes();
            let (released, result) = second_pass(&token, &token);
            assert_eq!(result.unwrap(), plaintext, "{len}");
            assert!(released < len, "{len}: the last block waits for the MAC");
            // Flip one ciphertext byte in place: same length, valid base64.
            let mut altered = token.clone();
            let index = 40;
            altered[index] = if altered[index] == b'A' { b'B' } else { b'A' };
            let (released, result) = second_pass(&token, &altered);
            assert!(result.is_err(), "{len}");
            assert!(released < len, "{len}: {released} bytes released");
            let mut longer = token.clone();
            longer.extend_from_slice(b"AAAA");
            assert!(second_pass(&token, &longer).1.is_err(), "{len}");
        }
    }

    /// A token made with a fixed IV and time, so that what a wrong key does to it is fixed too.
    fn fixed_token(key: &DataKey, plaintext: &[u8]) -> Vec<u8> {
        let mut token = Vec::new();
        let mut writer = FernetWriter::new(key, [3; BLOCK_LEN], 1_700_000_000, &mut token).unwrap();
        writer.update(plaintext, &mut token).unwrap();
        writer.finish(&mut token).unwrap();
        token
    }

    fn tail(token: &[u8]) -> &[u8] {
        &token[token.len() - KEY_CHECK_TEXT_LEN as usize..]
    }

    #[test]
    fn tokens_shorter_than_one_block_and_a_mac_are_malformed() {
        use base64::Engine;
        // 25-byte header + 32-byte MAC with no ciphertext, and less than a header.
        for len in [
            30,
            HEADER_LEN + MAC_LEN,
            HEADER_LEN + MAC_LEN + BLOCK_LEN - 1,
        ] {
            let mut token = vec![VERSION];
            token.resize(len, 7);
            let text = base64::engine::general_purpose::URL_SAFE.encode(&token);
            let mut verifier = FernetVerifier::new(&key());
            verifier.update(text.as_bytes()).unwrap();
            assert_eq!(
                verifier.finish(),
                Err(CryptoError::MalformedToken("too short")),
                "{len}"
            );
        }
    }

    #[test]
    fn encrypting_holds_no_more_than_a_chunk_and_a_block() {
        let mut token = Vec::new();
        let mut writer = FernetWriter::start(&key(), &mut token).unwrap();
        for len in [1, 100, 64 * 1024] {
            writer.update(&vec![0; len], &mut token).unwrap();
            assert!(writer.scratch.len() <= len + BLOCK_LEN, "{len}");
        }
    }

    #[test]
    fn decrypting_holds_no_more_than_a_chunk_and_a_block() {
        let token = fixed_token(&key(), &vec![5; 100_000]);
        let mut verifier = FernetVerifier::new(&key());
        verifier.update(&token).unwrap();
        let verified = verifier.finish().unwrap();
        let mut decryptor = FernetDecryptor::new(&key(), &verified).unwrap();
        let mut out = Vec::new();
        for chunk in token.chunks(4096) {
            decryptor.update(chunk, &mut out).unwrap();
            assert!(decryptor.scratch.len() <= chunk.len() + BLOCK_LEN);
        }
    }

    #[test]
    fn the_right_key_always_passes_the_padding_check() {
        for len in 0..70 {
            let token = fixed_token(&key(), &vec![9; len]);
            assert_eq!(check_key_by_padding(&key(), tail(&token)), Ok(()), "{len}");
        }
    }

    #[test]
    fn wrong_keys_almost_always_fail_the_padding_check() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let token = fixed_token(&key(), &vec![9; len]);
            let passing = (0..64u8)
                .filter(|&i| {
                    let wrong = DataKey::from_bytes([i.wrapping_add(100); 32]);
                    check_key_by_padding(&wrong, tail(&token)).is_ok()
                })
                .count();
            // One in 256 passes by chance; these fixed keys and tokens give at most one.
            assert!(passing <= 1, "{len}: {passing} of 64 passed");
        }
    }

    #[test]
    fn the_padding_check_refuses_short_or_broken_text() {
        let token = fixed_token(&key(), b"x");
        assert_eq!(
            check_key_by_padding(&key(), &token[token.len() - 60..]),
            Err(CryptoError::MalformedToken("too short"))
        );
        let mut broken = tail(&token).to_vec();
        broken[10] = b'*';
        assert_eq!(
            check_key_by_padding(&key(), &broken),
            Err(CryptoError::MalformedToken("invalid base64"))
        );
    }

    proptest! {
        #[test]
        fn streaming_in_any_pieces_round_trips(
            plaintext in proptest::collection::vec(any::<u8>(), 0..2000),
            piece in 1usize..300,
        ) {
            let mut token = Vec::new();
            let mut writer = FernetWriter::start(&key(), &mut token).unwrap();
            for chunk in plaintext.chunks(piece) {
                writer.update(chunk, &mut token).unwrap();
            }
            writer.finish(&mut token).unwrap();

            let mut verifier = FernetVerifier::new(&key());
            for chunk in token.chunks(piece) {
                verifier.update(chunk).unwrap();
            }
            let verified = verifier.finish().unwrap();
            prop_assert_eq!(verified.plaintext_len, plaintext.len() as u64);
            let mut decryptor = FernetDecryptor::new(&key(), &verified).unwrap();
            let mut out = Vec::new();
            for chunk in token.chunks(piece) {
                decryptor.update(chunk, &mut out).unwrap();
            }
            decryptor.finish(&mut out).unwrap();
            prop_assert_eq!(out, plaintext);
        }

        #[test]
        fn any_altered_character_is_rejected(
            plaintext in proptest::collection::vec(any::<u8>(), 0..200),
            position in any::<prop::sample::Index>(),
            replacement in prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=".to_vec()),
        ) {
            let mut token = encrypt(&key(), &plaintext).unwrap().into_bytes();
            let index = position.index(token.len());
            prop_assume!(token[index] != replacement);
            token[index] = replacement;
            // A changed character either breaks the base64 or changes the decoded bytes; the one
            // exception is the unused low bits of the final quantum, which strict decoding refuses.
            prop_assert!(decrypt(&key(), &token).is_err());
        }

        #[test]
        fn arbitrary_text_never_panics(text in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decrypt(&key(), &text);
        }
    }
}
