//! The contract of `../shared/API.md`, row by row, against the real router on an ephemeral port.

use crate::common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blobprox::crypto::data_key::DataKey;
use blobprox::crypto::fernet;
use blobprox::http::{Limits, UploadPolicy};
use blobprox::transfer::BlobFormat;
use common::{Options, TestServer, detail, json_with_status, load_keys};
use reqwest::Method;
use reqwest::multipart::{Form, Part};

/// A 1024-bit RSA public key: valid PEM, too weak to accept.
const RSA_1024_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDil+6pP5/Z+/52cvVNonhxdb+j
xbNzeeEuZm5QABBNv6hVNO6KCGmXltVC5viz3TzUhSPECw6Jux6YBukNzRFUgAOl
C7fWBW8ZBumd3Kmschcfh78YusCDSF9pOEXqwnppz0EM06/4LPzBW58qPVS38Smr
ZDc4gAoCsSviO1Dg3wIDAQAB
-----END PUBLIC KEY-----
";

#[tokio::test]
async fn public_key_is_the_key_file_as_spki_pem() {
    let server = TestServer::start().await;
    let pem = server.public_key().await;
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let on_disk = std::fs::read_to_string(
        common::SECRETS
            .key_dir
            .path()
            .join(blobprox::keys::PUBLIC_KEY_FILE),
    )
    .unwrap();
    assert_eq!(pem, on_disk);
}

#[tokio::test]
async fn routing_errors_come_before_authentication() {
    let server = TestServer::start().await;
    for with_credentials in [false, true] {
        let request = |method: Method, path: &str| {
            let builder = server.http.request(method, format!("{}{path}", server.url));
            if with_credentials {
                common::with_credentials(builder)
            } else {
                builder
            }
        };
        let response = request(Method::GET, "/no/such/route").send().await.unwrap();
        assert_eq!(detail(response, 404).await, "Not Found");
        for (method, path, allow) in [
            (Method::POST, "/key/public".to_owned(), "GET,HEAD"),
            (Method::GET, server.upload_path("a.txt"), "POST"),
            (Method::DELETE, server.download_path("a.txt"), "GET,HEAD"),
        ] {
            let response = request(method, &path).send().await.unwrap();
            assert_eq!(response.headers()["allow"], allow);
            assert_eq!(detail(response, 405).await, "Method Not Allowed");
        }
    }
}

#[tokio::test]
async fn any_credential_failure_is_401() {
    let server = TestServer::start().await;
    let secrets = &common::SECRETS.client;
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![
            ("x-decryption-key", &secrets.decryption_key),
            ("x-salt", &secrets.salt),
        ],
        vec![
            ("x-decryption-key", &secrets.decryption_key),
            ("x-salt", &secrets.salt),
            ("x-comparison-key", ""),
        ],
        vec![
            ("x-decryption-key", &secrets.decryption_key),
            ("x-salt", "00112233445566778899aabbccddeeff"),
            ("x-comparison-key", &secrets.key),
        ],
        vec![
            ("x-decryption-key", &secrets.key),
            ("x-salt", &secrets.salt),
            ("x-comparison-key", &secrets.key),
        ],
    ];
    for headers in cases {
        for (method, path) in [
            (Method::GET, "/key/public".to_owned()),
            (Method::POST, server.upload_path("a.txt")),
            (Method::GET, server.download_path("a.txt")),
        ] {
            let mut request = server.http.request(method, format!("{}{path}", server.url));
            for (name, value) in &headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(detail(response, 401).await, "Authentication failed");
        }
    }
}

#[tokio::test]
async fn upload_answers_under_both_names_and_download_returns_the_file() {
    let server = TestServer::start().await;
    let content = b"patient,score\n1,42\n";
    let response = server.upload("reports/q1.txt", content, None).await;
    let body = json_with_status(response, 200).await;
    assert_eq!(body["filename"], "reports/q1.txt");
    assert_eq!(body["file_name"], "reports/q1.txt");
    assert_eq!(body["decryption_keys"], body["keys"]);
    let wrapped = body["decryption_keys"]["me"].as_str().unwrap();
    assert_eq!(
        STANDARD.decode(wrapped).unwrap().len(),
        256,
        "standard base64 with padding"
    );

    let stored = server.raw_read("reports/q1.txt").await;
    assert!(!stored.windows(content.len()).any(|w| w == content));

    let response = server.download("reports/q1.txt", wrapped).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=reports/q1.txt"
    );
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(
        headers["content-length"],
        content.len().to_string().as_str()
    );
    assert_eq!(response.bytes().await.unwrap(), &content[..]);
}

#[tokio::test]
async fn wrapped_key_is_the_fernet_key_text_of_the_stored_token() {
    let server = TestServer::start_format(BlobFormat::Fernet).await;
    let wrapped = server.upload_ok("a.bin", b"abc").await;
    let data_key = load_keys().private_key.unwrap_key(&wrapped).unwrap();
    let stored = server.raw_read("a.bin").await;
    assert!(stored.starts_with(b"gAAAAA"));
    assert_eq!(fernet::decrypt(&data_key, &stored).unwrap(), b"abc");
}

#[tokio::test]
async fn every_upload_gets_a_fresh_data_key() {
    let server = TestServer::start().await;
    let first = server.upload_ok("one", b"same").await;
    let second = server.upload_ok("two", b"same").await;
    let keys = load_keys();
    assert_ne!(
        keys.private_key.unwrap_key(&first).unwrap().as_bytes(),
        keys.private_key.unwrap_key(&second).unwrap().as_bytes()
    );
    let response = server.download("two", &first).await;
    let text = detail(response, 403).await;
    assert!(text.contains("does not open this blob"), "{text}");
}

#[tokio::test]
async fn static_data_key_mode_uses_the_symmetric_key_file() {
    let server = TestServer::start_with(Options {
        upload_policy: UploadPolicy {
            static_data_key: true,
            ..UploadPolicy::default()
        },
        ..Options::default()
    })
    .await;
    let wrapped = server.upload_ok("legacy", b"x").await;
    let keys = load_keys();
    assert_eq!(
        keys.private_key.unwrap_key(&wrapped).unwrap().as_bytes(),
        keys.symmetric_key.as_bytes()
    );
}

#[tokio::test]
async fn overwrite_false_or_absent_keeps_the_existing_blob() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("kept.txt", b"original").await;
    for overwrite in [None, Some("false"), Some("0"), Some("No"), Some("OFF")] {
        let response = server.upload("kept.txt", b"replacement", overwrite).await;
        assert_eq!(detail(response, 409).await, "Blob already exists");
    }
    let response = server.upload("kept.txt", b"bad", Some("maybe")).await;
    assert!(detail(response, 400).await.contains("overwrite"));
    let response = server.download("kept.txt", &wrapped).await;
    assert_eq!(response.bytes().await.unwrap(), &b"original"[..]);
}

#[tokio::test]
async fn overwrite_true_in_any_spelling_replaces_the_blob() {
    let server = TestServer::start().await;
    server.upload_ok("doc", b"v0").await;
    for (index, overwrite) in ["true", "TRUE", "1", "yes", "On"].iter().enumerate() {
        let content = format!("v{}", index + 1);
        let response = server
            .upload("doc", content.as_bytes(), Some(overwrite))
            .await;
        let body = json_with_status(response, 200).await;
        let wrapped = body["keys"]["me"].as_str().unwrap();
        let response = server.download("doc", wrapped).await;
        assert_eq!(response.bytes().await.unwrap(), content.as_bytes());
    }
}

#[tokio::test]
async fn public_keys_may_arrive_as_a_file_part_and_after_the_file() {
    let server = TestServer::start().await;
    let recipients = serde_json::json!({ "me": server.public_key().await }).to_string();
    let form = Form::new()
        .part(
            "file",
            Part::bytes(b"late keys".to_vec()).file_name("f.txt"),
        )
        .part(
            "public-keys",
            Part::text(recipients).file_name("public-keys"),
        );
    let response = server.upload_form("late.txt", form).await;
    let body = json_with_status(response, 200).await;
    let response = server
        .download("late.txt", body["keys"]["me"].as_str().unwrap())
        .await;
    assert_eq!(response.bytes().await.unwrap(), &b"late keys"[..]);
}

async fn upload_with_recipients(server: &TestServer, recipients: &str) -> reqwest::Response {
    let form = Form::new()
        .text("public-keys", recipients.to_owned())
        .part("file", Part::bytes(b"content".to_vec()).file_name("f"));
    server.upload_form("r.bin", form).await
}

#[tokio::test]
async fn bad_recipients_are_400_naming_what_is_wrong() {
    let server = TestServer::start().await;
    let good = server.public_key().await;
    let cases = [
        ("not json".to_owned(), "JSON"),
        ("[1, 2]".to_owned(), "object"),
        ("{}".to_owned(), "no recipient"),
        (serde_json::json!({"clinic-a": 5}).to_string(), "clinic-a"),
        (
            serde_json::json!({"ok": good, "clinic-b": "garbage"}).to_string(),
            "clinic-b",
        ),
        (
            serde_json::json!({"clinic-c": RSA_1024_PEM}).to_string(),
            "clinic-c",
        ),
    ];
    for (recipients, expected) in cases {
        let text = detail(upload_with_recipients(&server, &recipients).await, 400).await;
        assert!(text.contains(expected), "{recipients}: {text}");
    }
    let text = detail(
        upload_with_recipients(
            &server,
            &serde_json::json!({"weak": RSA_1024_PEM}).to_string(),
        )
        .await,
        400,
    )
    .await;
    assert!(text.contains("2048"), "{text}");
    assert!(
        server
            .raw_names()
            .await
            .iter()
            .all(|f| !f.ends_with("r.bin"))
    );
}

#[tokio::test]
async fn recipient_count_and_size_are_limited() {
    let server = TestServer::start_with(Options {
        limits: Limits {
            max_recipients: 2,
            max_public_keys_bytes: 2048,
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;
    let pem = server.public_key().await;
    let three = serde_json::json!({"a": pem, "b": pem, "c": pem}).to_string();
    let text = detail(upload_with_recipients(&server, &three).await, 400).await;
    assert!(text.contains("at most 2"), "{text}");
    let huge = serde_json::json!({"a": "x".repeat(4096)}).to_string();
    let text = detail(upload_with_recipients(&server, &huge).await, 413).await;
    assert!(text.contains("2048 bytes"), "{text}");
}

#[tokio::test]
async fn missing_fields_are_422_in_fastapi_shape() {
    let server = TestServer::start().await;
    let only_file = Form::new().part("file", Part::bytes(b"x".to_vec()).file_name("f"));
    let response = server.upload_form("m", only_file).await;
    let body = json_with_status(response, 422).await;
    assert_eq!(
        body,
        serde_json::json!({"detail": [{"type": "missing", "loc": ["body", "public-keys"],
            "msg": "Field required", "input": null}]})
    );
    let nothing = Form::new().text("unrelated", "x");
    let response = server.upload_form("m", nothing).await;
    let body = json_with_status(response, 422).await;
    let fields: Vec<_> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loc"][1].clone())
        .collect();
    assert_eq!(fields, ["public-keys", "file"]);
}

#[tokio::test]
async fn containers_must_exist_and_be_validly_named() {
    let server = TestServer::start().await;
    let form = || {
        Form::new()
            .text("public-keys", "{}")
            .part("file", Part::bytes(b"x".to_vec()))
    };
    let response = server
        .authed(Method::POST, "/upload/absent/x")
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(detail(response, 404).await, "Container not found");
    for bad in ["UPPER", "ab", "a--b", "under_score"] {
        let response = server
            .authed(Method::POST, &format!("/upload/{bad}/x"))
            .multipart(form())
            .send()
            .await
            .unwrap();
        assert!(
            detail(response, 400).await.contains("container name"),
            "{bad}"
        );
    }
    let response = server
        .authed(Method::GET, "/download/absent/x")
        .header("x-blob-key", server.upload_ok("x", b"x").await)
        .send()
        .await
        .unwrap();
    assert_eq!(detail(response, 404).await, "Blob not found");
}

#[tokio::test]
async fn blob_names_with_traversal_or_control_characters_are_refused() {
    let server = TestServer::start().await;
    let long = "a/".repeat(512) + "b"; // 1025 characters
    for bad in [
        "..%2Fescape",
        "a%2F..%2Fb",
        "a//b",
        "nul%00byte",
        "line%0Abreak",
        &long,
    ] {
        let response = server.upload(bad, b"x", None).await;
        let text = detail(response, 400).await;
        assert!(text.contains("blob name"), "{bad}: {text}");
    }
    // HTTP clients normalise dot segments away, so these go out raw.
    for bad in ["../escape", "a/../b", "%2e%2e/x", "a/./b"] {
        let (status, body) =
            common::raw_request(&server.url, "POST", &server.upload_path(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("blob name"), "{bad}: {body}");
    }
    let longest = vec!["x".repeat(200); 5].join("/") + &"y".repeat(20); // 1024 characters
    server.upload_ok(&longest, b"x").await;
    assert_eq!(server.raw_names().await, [longest]);
}

#[tokio::test]
async fn unicode_names_round_trip_with_rfc6266_filename() {
    let server = TestServer::start().await;
    let name = "klinik/Überweisung 東京.csv";
    let encoded = "klinik/%C3%9Cberweisung%20%E6%9D%B1%E4%BA%AC.csv";
    let wrapped = server.upload_ok(encoded, "ü,1\n".as_bytes()).await;
    assert_eq!(server.raw_names().await, [name]);
    let response = server.download(encoded, &wrapped).await;
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.contains("filename*=UTF-8''klinik%2F%C3%9Cberweisung%20%E6%9D%B1%E4%BA%AC.csv"),
        "{disposition}"
    );
    assert_eq!(response.bytes().await.unwrap(), "ü,1\n".as_bytes());
}

#[tokio::test]
async fn download_key_problems_are_400_or_403_and_checked_before_storage() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("k.txt", b"secret").await;

    let response = server
        .authed(Method::GET, &server.download_path("no-such-blob"))
        .send()
        .await
        .unwrap();
    assert!(detail(response, 400).await.contains("decryption-key"));
    let response = server.download("no-such-blob", "bm90IGEga2V5").await;
    assert!(detail(response, 400).await.contains("unwrapped"));
    let response = server.download("k.txt", "%%% not base64").await;
    assert_eq!(response.status(), 400);

    let other = load_keys()
        .private_key
        .public_key()
        .wrap_key(&DataKey::generate().unwrap())
        .unwrap();
    let response = server.download("k.txt", &other).await;
    assert_eq!(response.status(), 403);
    let response = server.download("no-such-blob", &wrapped).await;
    assert_eq!(detail(response, 404).await, "Blob not found");
}

#[tokio::test]
async fn the_key_also_travels_in_a_header_or_a_multipart_body() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("h.txt", b"via header").await;
    let response = server
        .download_by_header(Method::GET, "h.txt", &wrapped)
        .await;
    assert_eq!(response.bytes().await.unwrap(), &b"via header"[..]);
    let response = server
        .authed(Method::GET, &server.download_path("h.txt"))
        .multipart(Form::new().text("decryption-key", wrapped))
        .send()
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap(), &b"via header"[..]);
}

#[tokio::test]
async fn head_answers_the_get_headers_without_a_body() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("data.json", b"{\"a\": 1}").await;
    let response = server
        .download_by_header(Method::HEAD, "data.json", &wrapped)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "8");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn tampered_truncated_or_plain_blobs_never_reach_the_client() {
    let server = TestServer::start().await;
    let content = vec![b'z'; 5000];
    let wrapped = server.upload_ok("t.bin", &content).await;
    let good = server.raw_read("t.bin").await;

    let mut flipped = good.clone();
    flipped[good.len() / 2] = if flipped[good.len() / 2] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let truncated = good[..good.len() - 40].to_vec();
    let plain = content.clone();
    for (case, bytes) in [
        ("flipped", flipped),
        ("truncated", truncated),
        ("plain", plain),
    ] {
        server.raw_write("t.bin", &bytes).await;
        let response = server.download("t.bin", &wrapped).await;
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        assert!(status == 403 || status == 502, "{case}: {status}");
        assert!(
            !body.windows(100).any(|w| w == &content[..100]),
            "{case} leaked plaintext"
        );
    }
}

#[tokio::test]
async fn an_emptied_blob_is_a_bad_gateway_not_a_missing_one() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("e.bin", b"content").await;
    server.raw_write("e.bin", b"").await;
    let text = detail(server.download("e.bin", &wrapped).await, 502).await;
    assert!(text.contains("empty"), "{text}");
}

#[tokio::test]
async fn python_written_fernet_blobs_download_including_standard_alphabet_keys() {
    let server = TestServer::start().await;
    let public = load_keys().private_key;
    // A key whose standard base64 has '+' or '/', as the original's generator wrote it.
    let key = DataKey::from_bytes([0xfb; 32]);
    let token = fernet::encrypt(&key, b"from python").unwrap();
    server.raw_write("legacy.txt", token.as_bytes()).await;
    let standard_text = STANDARD.encode(key.as_bytes());
    assert!(standard_text.contains('/') || standard_text.contains('+'));
    for text in [standard_text, key.to_text()] {
        let wrapped = wrap_text(&public, &text);
        let response = server.download("legacy.txt", &wrapped).await;
        assert_eq!(response.bytes().await.unwrap(), &b"from python"[..]);
    }
}

/// RSA-OAEP-wraps arbitrary key text, as a Python proxy would.
fn wrap_text(private: &blobprox::crypto::rsa::PrivateKey, text: &str) -> String {
    use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
    let pem = private.public_key().to_pem();
    let der = pem::parse(pem).unwrap().into_contents();
    let key = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&der).unwrap()).unwrap();
    let mut out = vec![0u8; key.ciphertext_size()];
    let sealed = key
        .encrypt(&OAEP_SHA256_MGF1SHA256, text.as_bytes(), &mut out, None)
        .unwrap();
    STANDARD.encode(sealed)
}

#[tokio::test]
async fn failed_uploads_leave_the_old_blob_and_no_debris() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("keep.txt", b"old").await;
    // The file streams first, then the keys turn out to be invalid.
    let form = Form::new()
        .text("overwrite", "true")
        .part("file", Part::bytes(vec![1u8; 3 << 20]).file_name("f"))
        .text("public-keys", "{\"x\": \"garbage\"}");
    let response = server.upload_form("keep.txt", form).await;
    assert_eq!(response.status(), 400);
    // A multipart body cut off in the middle of the file.
    let body = "--B\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--B\r\n\
                Content-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nhalf a file";
    let response = server
        .authed(Method::POST, &server.upload_path("keep.txt"))
        .header("content-type", "multipart/form-data; boundary=B")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(detail(response, 400).await.contains("multipart"));

    let response = server.download("keep.txt", &wrapped).await;
    assert_eq!(response.bytes().await.unwrap(), &b"old"[..]);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(server.raw_names().await, ["keep.txt"]);
}

#[tokio::test]
async fn malformed_upload_requests_are_400_with_a_reason() {
    let server = TestServer::start().await;
    let cases = [
        (None, "x".to_owned(), "multipart/form-data"),
        (
            Some("application/json"),
            "{}".to_owned(),
            "multipart/form-data",
        ),
        (Some("multipart/form-data"), "x".to_owned(), "boundary"),
        (
            Some("multipart/form-data; boundary=WRONG"),
            "--B\r\n\r\n".to_owned(),
            "multipart",
        ),
    ];
    for (content_type, body, expected) in cases {
        let mut request = server
            .authed(Method::POST, &server.upload_path("m"))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let text = detail(request.send().await.unwrap(), 400).await;
        assert!(text.contains(expected), "{content_type:?}: {text}");
    }
    let recipients = serde_json::json!({ "me": server.public_key().await }).to_string();
    let form = Form::new()
        .text("public-keys", recipients.clone())
        .text("public-keys", recipients);
    let response = server.upload_form("m", form).await;
    assert!(detail(response, 400).await.contains("more than once"));
}

#[tokio::test]
async fn download_bodies_are_limited() {
    let server = TestServer::start().await;
    let response = server
        .authed(Method::GET, &server.download_path("x"))
        .form(&[("decryption-key", "A".repeat(100_000))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn large_files_stream_through_intact() {
    let server = TestServer::start().await;
    let content: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let wrapped = server.upload_ok("big.bin", &content).await;
    let response = server.download("big.bin", &wrapped).await;
    assert_eq!(
        response.headers()["content-length"],
        content.len().to_string().as_str()
    );
    let body = response.bytes().await.unwrap();
    assert!(body == content, "downloaded bytes differ");
}

#[tokio::test]
async fn health_probes_need_no_credentials() {
    let server = TestServer::start().await;
    for path in ["/healthz", "/readyz"] {
        let response = server.get_anonymous(path).await;
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_name_running_through_an_existing_blob_is_a_conflict_on_local_disk() {
    let server = TestServer::start().await;
    server.upload_ok("reports", b"a file").await;
    let response = server.upload("reports/q1.txt", b"under it", None).await;
    if std::env::var(common::AZURE_ENV).is_ok() {
        // Azure has no directories: both names are ordinary blobs.
        assert_eq!(response.status(), 200);
    } else {
        assert!(detail(response, 409).await.contains("collides"));
    }
}
