//! The recipients of a data key: the `public-keys` field shared by upload and share, and the
//! answer that hands each of them the key wrapped for it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::error::ApiError;
use crate::crypto::rsa::RecipientKey;

/// Form field naming the recipients: a JSON object of recipient id → RSA public key PEM.
pub(super) const PUBLIC_KEYS_FIELD: &str = "public-keys";

/// Recipients in the order of their ids.
pub(super) type Recipients = Vec<(String, RecipientKey)>;

/// The answer of upload and share, under the original's names and the seed README's names alike.
#[derive(Debug, Serialize)]
pub struct KeysResponse {
    filename: String,
    decryption_keys: BTreeMap<String, String>,
    file_name: String,
    keys: BTreeMap<String, String>,
}

impl KeysResponse {
    /// The answer for the blob `name`: its data key wrapped for each recipient, by recipient id.
    pub(super) fn new(name: &str, decryption_keys: BTreeMap<String, String>) -> Self {
        Self {
            filename: name.to_owned(),
            decryption_keys: decryption_keys.clone(),
            file_name: name.to_owned(),
            keys: decryption_keys,
        }
    }
}

/// Parses `public-keys`: a non-empty JSON object of recipient id → RSA public key PEM.
pub(super) fn parse_recipients(text: &str, max_recipients: usize) -> Result<Recipients, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("{PUBLIC_KEYS_FIELD}: {why}"));
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let serde_json::Value::Object(entries) = value else {
        return Err(bad(
            "must be a JSON object of recipient id to public key PEM".into(),
        ));
    };
    if entries.is_empty() {
        return Err(bad("names no recipient".into()));
    }
    if entries.len() > max_recipients {
        return Err(bad(format!(
            "names {} recipients; at most {max_recipients} are allowed",
            entries.len()
        )));
    }
    entries
        .into_iter()
        .map(|(id, pem)| {
            let serde_json::Value::String(pem) = pem else {
                return Err(bad(format!(
                    "recipient {id:?}: the value must be a PEM string"
                )));
            };
            let key = RecipientKey::from_pem(&pem)
                .map_err(|e| bad(format!("recipient {id:?}: the public key {e}")))?;
            Ok((id, key))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_must_be_a_non_empty_object_of_pems() {
        for text in [
            "[]",
            "{}",
            "\"x\"",
            "{\"a\": 1}",
            "{\"a\": \"not a pem\"}",
            "not json",
        ] {
            let error = parse_recipients(text, 100).err().expect(text);
            assert!(matches!(error, ApiError::BadRequest(_)), "{text}");
        }
        let error = parse_recipients("{\"clinic-a\": \"garbage\"}", 100)
            .err()
            .unwrap();
        assert!(error.to_string().contains("clinic-a"));
    }
}
