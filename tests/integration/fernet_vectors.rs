//! The official Fernet test vectors (copied from `../shared/fernet-spec/` into
//! `tests/vectors/fernet/`, with their source note), run against blobprox's Fernet code.

use blobprox::crypto::data_key::DataKey;
use blobprox::crypto::fernet::{self, FernetVerifier, FernetWriter};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    #[serde(default)]
    desc: String,
    token: String,
    now: String,
    #[serde(default)]
    ttl_sec: Option<u64>,
    #[serde(default)]
    iv: Vec<u8>,
    #[serde(default)]
    src: String,
    secret: String,
}

fn vectors(file: &str) -> Vec<Vector> {
    let path = format!("{}/tests/vectors/fernet/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Seconds since the epoch of an RFC 3339 time such as `1985-10-26T01:20:01-07:00`.
fn unix_time(text: &str) -> u64 {
    let n = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
    let (year, month, day) = (n(0..4), n(5..7), n(8..10));
    let (hour, minute, second) = (n(11..13), n(14..16), n(17..19));
    let offset_sign = if &text[19..20] == "-" { -1 } else { 1 };
    let offset = offset_sign * (n(20..22) * 3600 + n(23..25) * 60);
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    (days * 86400 + hour * 3600 + minute * 60 + second - offset) as u64
}

/// Fernet's TTL rule, which the proxy does not apply to stored blobs.
fn within_ttl(timestamp: u64, now: u64, ttl: u64) -> bool {
    const MAX_CLOCK_SKEW: u64 = 60;
    timestamp + ttl >= now && timestamp <= now + MAX_CLOCK_SKEW
}

#[test]
fn generate_vectors_produce_the_exact_token() {
    for v in vectors("generate.json") {
        let key = DataKey::from_text(v.secret.as_bytes()).unwrap();
        let iv: [u8; 16] = v.iv.as_slice().try_into().unwrap();
        let mut token = Vec::new();
        let mut writer = FernetWriter::new(&key, iv, unix_time(&v.now), &mut token).unwrap();
        writer.update(v.src.as_bytes(), &mut token).unwrap();
        writer.finish(&mut token).unwrap();
        assert_eq!(String::from_utf8(token).unwrap(), v.token);
    }
}

#[test]
fn verify_vectors_open_to_the_source() {
    for v in vectors("verify.json") {
        let key = DataKey::from_text(v.secret.as_bytes()).unwrap();
        assert_eq!(
            fernet::decrypt(&key, v.token.as_bytes()).unwrap(),
            v.src.as_bytes()
        );
    }
}

#[test]
fn invalid_vectors_are_refused() {
    let cases = vectors("invalid.json");
    assert_eq!(cases.len(), 8);
    for v in cases {
        let key = DataKey::from_text(v.secret.as_bytes()).unwrap();
        let opened = fernet::decrypt(&key, v.token.as_bytes());
        let is_timestamp_case = v.desc.contains("TTL") || v.desc.contains("far-future");
        if is_timestamp_case {
            // These tokens are authentic; they fail only Fernet's TTL rule, which the proxy
            // deliberately does not apply to stored files.
            assert!(opened.is_ok(), "{}", v.desc);
            let mut verifier = FernetVerifier::new(&key);
            verifier.update(v.token.as_bytes()).unwrap();
            let timestamp = verifier.finish().unwrap().timestamp;
            let ttl = v.ttl_sec.expect("timestamp cases carry a TTL");
            assert!(!within_ttl(timestamp, unix_time(&v.now), ttl), "{}", v.desc);
        } else {
            assert!(opened.is_err(), "{} was accepted", v.desc);
        }
    }
}
