//! Key lifecycle: blobs outlive a key rotation, keys retire cleanly, and a stored blob is shared
//! with a new recipient without being rewritten. Runs on the local backend and on Azurite.

use crate::common;

use blobprox::keys;
use blobprox::transfer::BlobFormat;
use common::{Options, TestServer, detail, json_with_status};
use reqwest::multipart::{Form, Part};
use serde_json::json;

const FORMATS: [BlobFormat; 2] = [BlobFormat::Stream, BlobFormat::Fernet];

fn options(format: BlobFormat, key_dir: &std::path::Path) -> Options {
    let mut options = Options {
        key_dir: Some(key_dir.to_owned()),
        ..Options::default()
    };
    options.upload_policy.format = format;
    options
}

/// A key directory of its own, with new keys.
fn own_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    keys::generate_key_files(dir.path(), false).unwrap();
    dir
}

#[tokio::test]
async fn blobs_of_both_formats_outlive_a_rotation_until_their_key_is_removed() {
    let dir = own_keys();
    for format in FORMATS {
        let server = TestServer::start_with(options(format, dir.path())).await;
        let old_public = server.public_key().await;
        let before = server.upload_ok("before.bin", b"written before").await;

        let retired = keys::rotate_key_files(dir.path()).unwrap().unwrap();
        server.reload_keys(dir.path());
        let new_public = server.public_key().await;
        assert_ne!(
            new_public, old_public,
            "{format:?}: /key/public serves the new key"
        );
        let response = server.download("before.bin", &before).await;
        assert_eq!(response.status(), 200, "{format:?}");
        assert_eq!(response.bytes().await.unwrap(), &b"written before"[..]);

        let after = server.upload_ok("after.bin", b"written after").await;
        // Only the new key opens what was wrapped after the rotation.
        let old_only = keys::load_key_files(&retired).unwrap();
        assert!(old_only.unwrap_key(&after).is_err());
        let response = server.download("after.bin", &after).await;
        assert_eq!(response.bytes().await.unwrap(), &b"written after"[..]);

        std::fs::remove_dir_all(&retired).unwrap();
        server.reload_keys(dir.path());
        let refused = detail(server.download("before.bin", &before).await, 400).await;
        assert!(refused.contains("cannot be unwrapped"), "{refused}");
        let response = server.download("after.bin", &after).await;
        assert_eq!(response.status(), 200, "{format:?}");
    }
}

#[tokio::test]
async fn unwraps_are_counted_by_key_and_role() {
    let dir = own_keys();
    let server = TestServer::start_with(options(BlobFormat::Stream, dir.path())).await;
    let before = server.upload_ok("counted.bin", b"x").await;
    let old = keys::load_key_files(dir.path()).unwrap();
    let old_fingerprint = old.private_key.public_key().fingerprint().to_owned();
    keys::rotate_key_files(dir.path()).unwrap();
    server.reload_keys(dir.path());
    for _ in 0..2 {
        assert_eq!(server.download("counted.bin", &before).await.status(), 200);
    }
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "blobprox_key_unwraps_total{{key=\"{old_fingerprint}\",role=\"retired\"}} 2"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_shared_blob_opens_on_a_second_proxy_with_its_own_keys() {
    for format in FORMATS {
        let first = TestServer::start_format(format).await;
        let second_keys = own_keys();
        let second = first
            .start_beside(options(format, second_keys.path()))
            .await;
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let wrapped = first.upload_ok("shared/data.bin", &content).await;
        let stored = first.raw_read("shared/data.bin").await;

        let recipients =
            json!({ "hospital-b": second.public_key().await, "me": first.public_key().await });
        let answer = json_with_status(
            first.share("shared/data.bin", &wrapped, &recipients).await,
            200,
        )
        .await;
        assert_eq!(answer["filename"], "shared/data.bin");
        assert_eq!(answer["file_name"], "shared/data.bin");
        assert_eq!(answer["keys"], answer["decryption_keys"]);
        let for_second = answer["decryption_keys"]["hospital-b"].as_str().unwrap();
        assert_eq!(answer["decryption_keys"].as_object().unwrap().len(), 2);

        // The key wrapped for the first proxy does not open on the second, the shared one does.
        detail(second.download("shared/data.bin", &wrapped).await, 400).await;
        let response = second.download("shared/data.bin", for_second).await;
        assert_eq!(response.status(), 200, "{format:?}");
        assert_eq!(response.bytes().await.unwrap(), content);
        assert_eq!(
            first.raw_read("shared/data.bin").await,
            stored,
            "never rewritten"
        );
        // The second proxy can pass it on in turn.
        let onward = json!({ "back": first.public_key().await });
        let answer = json_with_status(
            second.share("shared/data.bin", for_second, &onward).await,
            200,
        )
        .await;
        let back = answer["keys"]["back"].as_str().unwrap();
        let response = first.download("shared/data.bin", back).await;
        assert_eq!(response.bytes().await.unwrap(), content);
    }
}

#[tokio::test]
async fn share_takes_its_fields_as_upload_and_download_do() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("fields.txt", b"hello").await;
    let recipients = json!({ "x": server.public_key().await }).to_string();
    let path = format!("/share/{}/fields.txt", server.container);
    // The wrapped key as a form field and public-keys as a file part, in a multipart body.
    let form = Form::new()
        .part(
            "public-keys",
            Part::bytes(recipients.clone().into_bytes()).file_name("keys.json"),
        )
        .text("decryption-key", wrapped.clone());
    let response = server
        .authed(reqwest::Method::POST, &path)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let answer = json_with_status(response, 200).await;
    assert!(answer["keys"]["x"].is_string());
    // Both as urlencoded fields.
    let response = server
        .authed(reqwest::Method::POST, &path)
        .form(&[("public-keys", &recipients), ("decryption-key", &wrapped)])
        .send()
        .await
        .unwrap();
    json_with_status(response, 200).await;
}

#[tokio::test]
async fn share_refuses_what_upload_and_download_refuse() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("guarded.bin", b"guarded").await;
    let other = server.upload_ok("other.bin", b"other").await;
    let recipients = json!({ "x": server.public_key().await });
    let path = format!("/share/{}/guarded.bin", server.container);

    let response = server
        .http
        .post(format!("{}{path}", server.url))
        .header("x-blob-key", &wrapped)
        .form(&[("public-keys", recipients.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(detail(response, 401).await, "Authentication failed");

    let response = server
        .authed(reqwest::Method::POST, &path)
        .header("x-blob-key", &wrapped)
        .form(&[("unrelated", "1")])
        .send()
        .await
        .unwrap();
    let body = json_with_status(response, 422).await;
    assert_eq!(body["detail"][0]["loc"], json!(["body", "public-keys"]));

    let response = server
        .authed(reqwest::Method::POST, &path)
        .form(&[("public-keys", recipients.to_string())])
        .send()
        .await
        .unwrap();
    assert!(detail(response, 400).await.contains("x-blob-key"));

    let bad_pem =
        json!({ "clinic-z": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n" });
    let refused = detail(server.share("guarded.bin", &wrapped, &bad_pem).await, 400).await;
    assert!(refused.contains("clinic-z"), "{refused}");
    let refused = detail(server.share("guarded.bin", &wrapped, &json!({})).await, 400).await;
    assert!(refused.contains("no recipient"), "{refused}");
    detail(
        server
            .share("guarded.bin", "bm90IGEga2V5", &recipients)
            .await,
        400,
    )
    .await;
    // A key this proxy unwraps, but for another blob.
    let refused = detail(server.share("guarded.bin", &other, &recipients).await, 403).await;
    assert!(refused.contains("does not open"), "{refused}");
    let missing = detail(
        server.share("missing.bin", &wrapped, &recipients).await,
        404,
    )
    .await;
    assert_eq!(missing, "Blob not found");
    let response = server
        .authed(
            reqwest::Method::POST,
            "/share/no-such-container/guarded.bin",
        )
        .header("x-blob-key", &wrapped)
        .form(&[("public-keys", recipients.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(detail(response, 404).await, "Blob not found");
}

#[tokio::test]
async fn share_is_in_the_openapi_document() {
    let server = TestServer::start().await;
    let document: serde_json::Value =
        serde_json::from_str(&server.get_text("/openapi.json").await).unwrap();
    let share = &document["paths"]["/share/{container}/{blob}"]["post"];
    for status in ["200", "400", "401", "403", "404", "422"] {
        assert!(share["responses"][status].is_object(), "{status}");
    }
}
