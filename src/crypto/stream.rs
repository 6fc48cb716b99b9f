//! blobprox's streaming blob format: a short header, then AES-256-GCM segments that can be
//! authenticated one at a time. See `docs/FORMAT.md` for the byte-level description.
//!
//! Keys come from HKDF-SHA256 over the data key, salted with a per-blob random salt and bound to
//! every header byte, so a header moved to another blob, or changed, yields different keys. Part
//! of the HKDF output is stored as a key commitment: a wrong key is recognised as such before any
//! segment is touched. Each segment's nonce is its index and a last-segment flag, never read from
//! storage, so reordering, duplication, truncation and extension all fail authentication.

use std::ops::Range;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hkdf;

use super::CryptoError;
use super::data_key::DataKey;

/// First bytes of every stream blob. The first byte is not base64, so it never starts a Fernet
/// token (which is base64 text starting `gAAAAA`).
pub const MAGIC: [u8; 8] = [0x89, b'B', b'P', b'X', b'\r', b'\n', 0x1a, b'\n'];
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of the header in bytes.
pub const HEADER_LEN: usize = 96;
/// Length of each segment's GCM tag.
pub const TAG_LEN: usize = 16;
/// Plaintext bytes per segment written by default: small enough that a range read fetches
/// little more than it needs, large enough that tags cost 0.02% and per-segment work vanishes.
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Smallest and largest segment sizes a reader accepts (powers of two only).
const SEGMENT_SIZE_RANGE: Range<u32> = 64..(16 * 1024 * 1024 + 1);

// Where each header field lies: the table in docs/FORMAT.md.
const MAGIC_AT: Range<usize> = 0..8;
const VERSION_AT: usize = 8;
const SEGMENT_SIZE_AT: Range<usize> = 9..13;
const RESERVED_AT: Range<usize> = 13..16;
const SALT_AT: Range<usize> = 16..48;
const COMMITMENT_AT: Range<usize> = 48..80;
const CHECKSUM_AT: Range<usize> = 80..HEADER_LEN;
const SALT_LEN: usize = SALT_AT.end - SALT_AT.start;
const COMMITMENT_LEN: usize = COMMITMENT_AT.end - COMMITMENT_AT.start;
const CHECKSUM_LEN: usize = CHECKSUM_AT.end - CHECKSUM_AT.start;
/// Bytes of the header covered by key derivation: everything before the commitment.
const BOUND_LEN: usize = COMMITMENT_AT.start;
/// Bytes of the header covered by the checksum: everything before it.
const CHECKED_LEN: usize = CHECKSUM_AT.start;
const HKDF_LABEL: &[u8] = b"blobprox stream v1";

/// The fixed-size header of a stream blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// Plaintext bytes per segment (all but the last are exactly this long).
    pub segment_size: u32,
    salt: [u8; SALT_LEN],
    commitment: [u8; COMMITMENT_LEN],
}

impl StreamHeader {
    /// Parses a header; fails on foreign magic, a damaged header, an unknown version or an
    /// impossible segment size.
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() < HEADER_LEN || bytes[MAGIC_AT] != MAGIC {
            return Err(CryptoError::Corrupt("not a blobprox stream header"));
        }
        // The unkeyed checksum only tells damage from a wrong key; the keys protect the header.
        if checksum(&bytes[..CHECKED_LEN]) != bytes[CHECKSUM_AT] {
            return Err(CryptoError::Corrupt("the stream header is damaged"));
        }
        if bytes[VERSION_AT] != VERSION {
            return Err(CryptoError::Corrupt("unknown stream format version"));
        }
        let segment_size = u32::from_be_bytes(bytes[SEGMENT_SIZE_AT].try_into().expect("4 bytes"));
        if !SEGMENT_SIZE_RANGE.contains(&segment_size) || !segment_size.is_power_of_two() {
            return Err(CryptoError::Corrupt("impossible segment size"));
        }
        if bytes[RESERVED_AT] != [0, 0, 0] {
            return Err(CryptoError::Corrupt("reserved header bytes are not zero"));
        }
        Ok(Self {
            segment_size,
            salt: bytes[SALT_AT].try_into().expect("32 bytes"),
            commitment: bytes[COMMITMENT_AT].try_into().expect("32 bytes"),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..BOUND_LEN].copy_from_slice(&self.bound_bytes());
        bytes[COMMITMENT_AT].copy_from_slice(&self.commitment);
        let sum = checksum(&bytes[..CHECKED_LEN]);
        bytes[CHECKSUM_AT].copy_from_slice(&sum);
        bytes
    }

    /// Magic, version, segment size, reserved bytes and salt: what key derivation binds.
    fn bound_bytes(&self) -> [u8; BOUND_LEN] {
        let mut bytes = [0u8; BOUND_LEN];
        bytes[MAGIC_AT].copy_from_slice(&MAGIC);
        bytes[VERSION_AT] = VERSION;
        bytes[SEGMENT_SIZE_AT].copy_from_slice(&self.segment_size.to_be_bytes());
        bytes[SALT_AT].copy_from_slice(&self.salt);
        bytes
    }
}

/// The first 16 bytes of SHA-256 of the header bytes before the checksum.
fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref()[..CHECKSUM_LEN]
        .try_into()
        .expect("16 bytes")
}

/// The nonce of one segment: 3 zero bytes, the segment index (u64 big-endian), and 1 for the last
/// segment or 0 otherwise. It is computed from the position, never read from storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentNonce {
    index: u64,
    last: bool,
}

impl SegmentNonce {
    /// The nonce of segment `index`, flagged when it is the blob's last segment.
    pub fn new(index: u64, last: bool) -> Self {
        Self { index, last }
    }

    fn to_nonce(self) -> Nonce {
        let mut bytes = [0u8; 12];
        bytes[3..11].copy_from_slice(&self.index.to_be_bytes());
        bytes[11] = u8::from(self.last);
        Nonce::assume_unique_for_key(bytes)
    }
}

/// The segment key of one blob, derived from its data key and header.
pub struct SegmentKey {
    aead: LessSafeKey,
}

/// HKDF output length as the trait HKDF wants.
struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// Derives (segment key bytes, commitment) from the data key and the header's bound bytes.
fn derive(
    data_key: &DataKey,
    header: &StreamHeader,
) -> Result<([u8; 32], [u8; COMMITMENT_LEN]), CryptoError> {
    let bound = header.bound_bytes();
    let info = [HKDF_LABEL, &bound[..]];
    let mut output = [0u8; 32 + COMMITMENT_LEN];
    hkdf::Salt::new(hkdf::HKDF_SHA256, &header.salt)
        .extract(data_key.as_bytes())
        .expand(&info, OutputLen(output.len()))?
        .fill(&mut output)?;
    let (key, commitment) = output.split_at(32);
    Ok((
        key.try_into().expect("32 bytes"),
        commitment.try_into().expect("32 bytes"),
    ))
}

impl SegmentKey {
    /// Checks that `data_key` is the key this header was written for, and derives the segment key.
    pub fn open(data_key: &DataKey, header: &StreamHeader) -> Result<Self, CryptoError> {
        let (key, commitment) = derive(data_key, header)?;
        verify_slices_are_equal(&commitment, &header.commitment)
            .map_err(|_| CryptoError::KeyMismatch)?;
        Self::from_bytes(&key)
    }

    fn from_bytes(key: &[u8; 32]) -> Result<Self, CryptoError> {
        Ok(Self {
            aead: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key)?),
        })
    }

    /// Authenticates one stored segment (ciphertext and tag) and decrypts it into the start of
    /// `plaintext`, which must have room for it; returns the plaintext length. Decrypting out of
    /// place lets a reader gather many segments into one contiguous buffer without a copy.
    pub fn open_segment(
        &self,
        nonce: SegmentNonce,
        stored: &[u8],
        plaintext: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let len = stored
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(CryptoError::AuthenticationFailed)?;
        let (ciphertext, tag) = stored.split_at(len);
        let out = plaintext
            .get_mut(..len)
            .expect("the plaintext buffer has room for the segment");
        self.aead
            .open_separate_gather(nonce.to_nonce(), Aad::empty(), ciphertext, tag, out)
            .map_err(|_| CryptoError::AuthenticationFailed)?;
        Ok(len)
    }

    fn seal_segment(
        &self,
        nonce: SegmentNonce,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self.aead.seal_in_place_separate_tag(
            nonce.to_nonce(),
            Aad::empty(),
            &mut out[start..],
        )?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// Where things are in a stream blob of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLayout {
    segment_size: u64,
    segment_count: u64,
    plaintext_len: u64,
}

impl StreamLayout {
    /// The layout of a blob of `blob_size` bytes, or an error when no valid blob has that size.
    pub fn new(segment_size: u32, blob_size: u64) -> Result<Self, CryptoError> {
        let segment_size = u64::from(segment_size);
        let stored_segment = segment_size + TAG_LEN as u64;
        let body = blob_size
            .checked_sub(HEADER_LEN as u64)
            .filter(|&body| body >= TAG_LEN as u64)
            .ok_or(CryptoError::Corrupt("too short for a stream blob"))?;
        let segment_count = body.div_ceil(stored_segment);
        let last_stored = body - (segment_count - 1) * stored_segment;
        // Only an empty blob has an empty last segment.
        if last_stored < TAG_LEN as u64 || (segment_count > 1 && last_stored == TAG_LEN as u64) {
            return Err(CryptoError::Corrupt(
                "blob size does not fit the segment layout",
            ));
        }
        Ok(Self {
            segment_size,
            segment_count,
            plaintext_len: body - segment_count * TAG_LEN as u64,
        })
    }

    /// Total plaintext bytes.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Number of segments.
    pub fn segment_count(&self) -> u64 {
        self.segment_count
    }

    /// Stored bytes of a full segment.
    pub fn stored_segment_len(&self) -> u64 {
        self.segment_size + TAG_LEN as u64
    }

    /// Plaintext bytes per full segment.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// The nonce of segment `index`.
    pub fn nonce(&self, index: u64) -> SegmentNonce {
        SegmentNonce::new(index, index + 1 == self.segment_count)
    }

    /// The segments holding plaintext `range` (which must be non-empty and within the blob).
    pub fn segments_for(&self, range: &Range<u64>) -> Range<u64> {
        range.start / self.segment_size..(range.end - 1) / self.segment_size + 1
    }

    /// The stored bytes of segments `segments`.
    pub fn stored_range(&self, segments: &Range<u64>) -> Range<u64> {
        let blob_end = HEADER_LEN as u64 + self.plaintext_len + self.segment_count * TAG_LEN as u64;
        let start = HEADER_LEN as u64 + segments.start * self.stored_segment_len();
        let end = HEADER_LEN as u64 + segments.end * self.stored_segment_len();
        start..end.min(blob_end)
    }
}

/// Encrypts a plaintext stream into a stream blob, segment by segment.
pub struct StreamWriter {
    key: SegmentKey,
    segment_size: usize,
    pending: Vec<u8>,
    next_index: u64,
}

impl StreamWriter {
    /// Starts a blob with a random salt, appending the header to `out`.
    pub fn start(data_key: &DataKey, out: &mut Vec<u8>) -> Result<Self, CryptoError> {
        let mut salt = [0u8; SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt)?;
        Self::new(data_key, DEFAULT_SEGMENT_SIZE, salt, out)
    }

    /// Starts a blob with the given segment size and salt, appending the header to `out`.
    pub fn new(
        data_key: &DataKey,
        segment_size: u32,
        salt: [u8; SALT_LEN],
        out: &mut Vec<u8>,
    ) -> Result<Self, CryptoError> {
        let mut header = StreamHeader {
            segment_size,
            salt,
            commitment: [0; COMMITMENT_LEN],
        };
        let (key, commitment) = derive(data_key, &header)?;
        header.commitment = commitment;
        out.extend_from_slice(&header.to_bytes());
        Ok(Self {
            key: SegmentKey::from_bytes(&key)?,
            segment_size: segment_size as usize,
            pending: Vec::with_capacity(segment_size as usize),
            next_index: 0,
        })
    }

    /// Encrypts `plaintext`, appending every segment known not to be the last to `out`.
    pub fn update(&mut self, mut plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        // A full segment is sealed only once more data shows it is not the last one.
        while !plaintext.is_empty() {
            if self.pending.len() == self.segment_size {
                let pending = std::mem::take(&mut self.pending);
                self.seal(&pending, false, out)?;
                self.pending = pending;
                self.pending.clear();
            }
            if self.pending.is_empty() && plaintext.len() > self.segment_size {
                let (segment, rest) = plaintext.split_at(self.segment_size);
                self.seal(segment, false, out)?;
                plaintext = rest;
                continue;
            }
            let take = (self.segment_size - self.pending.len()).min(plaintext.len());
            self.pending.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
        }
        Ok(())
    }

    /// Seals the last segment (possibly empty) and appends it to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let pending = std::mem::take(&mut self.pending);
        self.seal(&pending, true, out)
    }

    fn seal(&mut self, segment: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let nonce = SegmentNonce::new(self.next_index, last);
        self.next_index += 1;
        self.key.seal_segment(nonce, segment, out)
    }
}

/// Decrypts a whole (small) stream blob; for tests and vectors.
pub fn decrypt(data_key: &DataKey, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let header = StreamHeader::parse(blob)?;
    let key = SegmentKey::open(data_key, &header)?;
    let layout = StreamLayout::new(header.segment_size, blob.len() as u64)?;
    let mut plaintext = vec![0; layout.plaintext_len() as usize];
    let mut filled = 0;
    for index in 0..layout.segment_count() {
        let range = layout.stored_range(&(index..index + 1));
        let stored = &blob[range.start as usize..range.end as usize];
        filled += key.open_segment(layout.nonce(index), stored, &mut plaintext[filled..])?;
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL_SEGMENT: u32 = 64;

    fn key() -> DataKey {
        DataKey::from_bytes([3; 32])
    }

    fn encrypt(plaintext: &[u8], piece: usize) -> Vec<u8> {
        let mut blob = Vec::new();
        let mut writer =
            StreamWriter::new(&key(), SMALL_SEGMENT, [9; SALT_LEN], &mut blob).unwrap();
        for chunk in plaintext.chunks(piece.max(1)) {
            writer.update(chunk, &mut blob).unwrap();
        }
        writer.finish(&mut blob).unwrap();
        blob
    }

    #[test]
    fn sizes_follow_from_the_blob_size() {
        for len in [0usize, 1, 63, 64, 65, 128, 192, 1000] {
            let blob = encrypt(&vec![1; len], 7);
            let segments = len.div_ceil(64).max(1);
            assert_eq!(blob.len(), HEADER_LEN + len + segments * TAG_LEN, "{len}");
            let layout = StreamLayout::new(SMALL_SEGMENT, blob.len() as u64).unwrap();
            assert_eq!(layout.plaintext_len(), len as u64);
        }
    }

    #[test]
    fn impossible_sizes_are_refused() {
        let stored = u64::from(SMALL_SEGMENT) + TAG_LEN as u64;
        let h = HEADER_LEN as u64;
        for size in [0, h - 1, h, h + 15, h + stored + 16, h + stored + 15] {
            assert!(StreamLayout::new(SMALL_SEGMENT, size).is_err(), "{size}");
        }
    }

    #[test]
    fn segment_sizes_must_be_powers_of_two_within_bounds() {
        let with_size = |segment_size: u32| {
            StreamHeader {
                segment_size,
                salt: [1; SALT_LEN],
                commitment: [2; COMMITMENT_LEN],
            }
            .to_bytes()
        };
        let max = SEGMENT_SIZE_RANGE.end - 1;
        for good in [SEGMENT_SIZE_RANGE.start, DEFAULT_SEGMENT_SIZE, max] {
            assert_eq!(
                StreamHeader::parse(&with_size(good)).unwrap().segment_size,
                good
            );
        }
        for bad in [
            0,
            32,
            SEGMENT_SIZE_RANGE.start + 1,
            3 << 10,
            2 * max,
            max + 1,
            u32::MAX,
        ] {
            assert_eq!(
                StreamHeader::parse(&with_size(bad)),
                Err(CryptoError::Corrupt("impossible segment size")),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_fields_tile_the_header_as_documented() {
        let fields = [
            MAGIC_AT,
            VERSION_AT..VERSION_AT + 1,
            SEGMENT_SIZE_AT,
            RESERVED_AT,
            SALT_AT,
            COMMITMENT_AT,
            CHECKSUM_AT,
        ];
        assert_eq!(fields[0].start, 0);
        for pair in fields.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert_eq!(fields.last().unwrap().end, 96);
        let format = include_str!("../../docs/FORMAT.md");
        for field in fields {
            let row = format!("| {} | {} |", field.start, field.len());
            assert!(format.contains(&row), "docs/FORMAT.md lacks {row}");
        }
    }

    #[test]
    fn a_damaged_header_is_told_apart_from_a_wrong_key() {
        let blob = encrypt(b"hello", 5);
        // Every checked byte after the magic: version, size, reserved, salt, commitment.
        for index in MAGIC.len()..CHECKED_LEN {
            let mut damaged = blob.clone();
            damaged[index] ^= 0x20;
            assert_eq!(
                StreamHeader::parse(&damaged),
                Err(CryptoError::Corrupt("the stream header is damaged")),
                "byte {index}"
            );
        }
    }

    #[test]
    fn the_layout_knows_its_segment_size() {
        let blob = encrypt(&[1; 200], 7);
        let layout = StreamLayout::new(SMALL_SEGMENT, blob.len() as u64).unwrap();
        assert_eq!(layout.segment_size(), u64::from(SMALL_SEGMENT));
        assert_eq!(layout.segments_for(&(130..131)), 2..3);
    }

    #[test]
    fn wrong_key_is_reported_as_a_key_mismatch() {
        let blob = encrypt(b"hello", 5);
        let other = DataKey::from_bytes([4; 32]);
        assert_eq!(decrypt(&other, &blob), Err(CryptoError::KeyMismatch));
    }

    #[test]
    fn magic_cannot_start_a_fernet_token() {
        assert_ne!(&MAGIC[..6], super::super::fernet::TOKEN_TEXT_PREFIX);
        assert!(!MAGIC[0].is_ascii());
    }

    proptest! {
        #[test]
        fn any_plaintext_round_trips_in_any_pieces(
            plaintext in proptest::collection::vec(any::<u8>(), 0..700),
            piece in 1usize..200,
        ) {
            let blob = encrypt(&plaintext, piece);
            prop_assert_eq!(decrypt(&key(), &blob).unwrap(), plaintext);
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            plaintext in proptest::collection::vec(any::<u8>(), 0..300),
            position in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut blob = encrypt(&plaintext, 50);
            let index = position.index(blob.len());
            blob[index] ^= 1 << bit;
            prop_assert!(decrypt(&key(), &blob).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut blob = MAGIC.to_vec();
            blob.extend_from_slice(&bytes);
            let _ = decrypt(&key(), &blob);
        }
    }
}
