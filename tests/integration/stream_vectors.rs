//! Test vectors of the stream format (`tests/vectors/stream/*.json`), each with its expected
//! outcome. Regenerate with `cargo test --test integration stream_vectors:: -- --ignored` after a
//! deliberate format change (and bump the format version).

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blobprox::crypto::CryptoError;
use blobprox::crypto::data_key::DataKey;
use blobprox::crypto::stream::{self, HEADER_LEN, StreamWriter, TAG_LEN};
use serde::{Deserialize, Serialize};

/// Segment size of the vectors: small, so that multi-segment blobs stay small files.
const SEGMENT: usize = 1024;

/// What opening a vector must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    /// Opens to `plaintext`.
    Ok,
    /// Refused: the key is not the blob's key.
    WrongKey,
    /// Refused: the blob is damaged, truncated, extended or rearranged.
    Corrupt,
}

#[derive(Debug, Serialize, Deserialize)]
struct Vector {
    description: String,
    segment_size: usize,
    key: String,
    blob: String,
    expect: Expect,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<String>,
}

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/stream")
}

/// Every vector that must exist, by file stem.
const NAMES: [&str; 18] = [
    "size-0",
    "size-1",
    "size-segment-minus-1",
    "size-segment",
    "size-segment-plus-1",
    "size-3-segments",
    "wrong-key",
    "truncated-at-segment-boundary",
    "truncated-inside-segment",
    "reordered-segments",
    "duplicated-segment",
    "trailing-bytes",
    "header-from-blob-with-other-key",
    "header-from-blob-with-same-key",
    "bit-flip-in-header",
    "bit-flip-in-salt",
    "bit-flip-in-segment",
    "bit-flip-in-last-tag",
];

#[test]
fn every_vector_gives_its_expected_outcome() {
    for name in NAMES {
        let path = vector_dir().join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let vector: Vector = serde_json::from_str(&text).unwrap();
        let key = DataKey::from_text(vector.key.as_bytes()).unwrap();
        let blob = STANDARD.decode(&vector.blob).unwrap();
        let outcome = stream::decrypt(&key, &blob);
        match vector.expect {
            Expect::Ok => {
                let expected = STANDARD.decode(vector.plaintext.as_ref().unwrap()).unwrap();
                assert_eq!(outcome.as_deref(), Ok(&expected[..]), "{name}");
            }
            Expect::WrongKey => assert_eq!(outcome, Err(CryptoError::KeyMismatch), "{name}"),
            Expect::Corrupt => assert!(
                matches!(
                    outcome,
                    Err(CryptoError::Corrupt(_) | CryptoError::AuthenticationFailed)
                ),
                "{name}: {outcome:?}"
            ),
        }
    }
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

fn seal(key: &DataKey, salt: u8, plaintext: &[u8]) -> Vec<u8> {
    let mut blob = Vec::new();
    let mut writer = StreamWriter::new(key, SEGMENT as u32, [salt; 32], &mut blob).unwrap();
    writer.update(plaintext, &mut blob).unwrap();
    writer.finish(&mut blob).unwrap();
    blob
}

/// Stored segment `index` of `blob`.
fn segment(blob: &[u8], index: usize) -> &[u8] {
    let stored = SEGMENT + TAG_LEN;
    let start = HEADER_LEN + index * stored;
    &blob[start..(start + stored).min(blob.len())]
}

/// A blob, what opening it must give, and the plaintext when that is `Ok`.
type Outcome = (Vec<u8>, Expect, Option<Vec<u8>>);

#[test]
#[ignore = "writes tests/vectors/stream; run by hand after a deliberate format change"]
fn regenerate_vectors() {
    let key = DataKey::from_bytes([0x42; 32]);
    let other_key = DataKey::from_bytes([0x24; 32]);
    let three = plaintext(3 * SEGMENT);
    let good = seal(&key, 1, &three);
    let concat = |parts: &[&[u8]]| parts.concat();
    let flip = |blob: &[u8], at: usize| {
        let mut blob = blob.to_vec();
        blob[at] ^= 0x01;
        blob
    };
    let ok = |len: usize| {
        (
            seal(&key, 1, &plaintext(len)),
            Expect::Ok,
            Some(plaintext(len)),
        )
    };
    let bad = |blob: Vec<u8>, expect| (blob, expect, None);
    let header = |blob: &[u8]| blob[..HEADER_LEN].to_vec();
    let cases: Vec<(&str, &str, Outcome, &DataKey)> = vec![
        (
            "size-0",
            "empty plaintext: one empty last segment",
            ok(0),
            &key,
        ),
        ("size-1", "one byte", ok(1), &key),
        (
            "size-segment-minus-1",
            "one short segment",
            ok(SEGMENT - 1),
            &key,
        ),
        (
            "size-segment",
            "exactly one full segment, flagged last",
            ok(SEGMENT),
            &key,
        ),
        (
            "size-segment-plus-1",
            "a full segment and a 1-byte last one",
            ok(SEGMENT + 1),
            &key,
        ),
        (
            "size-3-segments",
            "three full segments",
            ok(3 * SEGMENT),
            &key,
        ),
        (
            "wrong-key",
            "the 3-segment blob opened with another key",
            (good.clone(), Expect::WrongKey, None),
            &other_key,
        ),
        (
            "truncated-at-segment-boundary",
            "the last segment removed",
            bad(
                good[..good.len() - SEGMENT - TAG_LEN].to_vec(),
                Expect::Corrupt,
            ),
            &key,
        ),
        (
            "truncated-inside-segment",
            "the last 10 bytes removed",
            bad(good[..good.len() - 10].to_vec(), Expect::Corrupt),
            &key,
        ),
        (
            "reordered-segments",
            "segments 0 and 1 swapped",
            bad(
                concat(&[
                    &header(&good),
                    segment(&good, 1),
                    segment(&good, 0),
                    segment(&good, 2),
                ]),
                Expect::Corrupt,
            ),
            &key,
        ),
        (
            "duplicated-segment",
            "segment 1 stored twice",
            bad(
                concat(&[
                    &header(&good),
                    segment(&good, 0),
                    segment(&good, 1),
                    segment(&good, 1),
                    segment(&good, 2),
                ]),
                Expect::Corrupt,
            ),
            &key,
        ),
        (
            "trailing-bytes",
            "one byte appended",
            bad(concat(&[&good, &[0]]), Expect::Corrupt),
            &key,
        ),
        (
            "header-from-blob-with-other-key",
            "header of a blob under another key",
            bad(
                concat(&[&header(&seal(&other_key, 2, &three)), &good[HEADER_LEN..]]),
                Expect::WrongKey,
            ),
            &key,
        ),
        (
            "header-from-blob-with-same-key",
            "header of another blob under the same key",
            bad(
                concat(&[&header(&seal(&key, 2, &three)), &good[HEADER_LEN..]]),
                Expect::Corrupt,
            ),
            &key,
        ),
        (
            "bit-flip-in-header",
            "segment size field altered",
            bad(flip(&good, 11), Expect::Corrupt),
            &key,
        ),
        (
            "bit-flip-in-salt",
            "salt altered",
            bad(flip(&good, 20), Expect::Corrupt),
            &key,
        ),
        (
            "bit-flip-in-segment",
            "a ciphertext bit of segment 1 flipped",
            bad(
                flip(&good, HEADER_LEN + SEGMENT + TAG_LEN + 5),
                Expect::Corrupt,
            ),
            &key,
        ),
        (
            "bit-flip-in-last-tag",
            "the last bit of the blob flipped",
            bad(flip(&good, good.len() - 1), Expect::Corrupt),
            &key,
        ),
    ];
    assert_eq!(cases.len(), NAMES.len());
    std::fs::create_dir_all(vector_dir()).unwrap();
    for (name, description, (blob, expect, plaintext), key) in cases {
        let vector = Vector {
            description: description.into(),
            segment_size: SEGMENT,
            key: key.to_text(),
            blob: STANDARD.encode(blob),
            expect,
            plaintext: plaintext.map(|p| STANDARD.encode(p)),
        };
        let text = serde_json::to_string_pretty(&vector).unwrap() + "\n";
        std::fs::write(vector_dir().join(format!("{name}.json")), text).unwrap();
    }
}
