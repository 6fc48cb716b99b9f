//! Hostile and malformed input, limits, and storage faults: always a 4xx (or a clear 5xx for
//! storage) with a detail, never a panic or a hang, and nothing stored changes.

use crate::common;

use std::time::Duration;

use blobprox::http::{ConnectionLimits, Limits};
use blobprox::storage::{AzureAccount, Backend, Storage};
use common::{Options, TestServer, credential_lines, detail};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn recipients(server: &TestServer) -> String {
    serde_json::json!({ "me": server.public_key().await }).to_string()
}

/// Sends raw bytes on a new connection; returns what the server answered before closing.
async fn raw_exchange(
    server: &TestServer,
    request: &[u8],
    pause_after: Option<Duration>,
) -> String {
    let mut stream = server.connect().await;
    stream.write_all(request).await.unwrap();
    if let Some(pause) = pause_after {
        tokio::time::sleep(pause).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn every_method_on_every_route_is_405_or_served() {
    let server = TestServer::start().await;
    let routes = [
        ("/key/public".to_owned(), &["GET", "HEAD"][..]),
        (server.upload_path("x"), &["POST"]),
        (server.download_path("x"), &["GET", "HEAD"]),
        ("/healthz".to_owned(), &["GET", "HEAD"]),
        ("/metrics".to_owned(), &["GET", "HEAD"]),
    ];
    for (path, allowed) in routes {
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let response = server
                .authed(Method::from_bytes(method.as_bytes()).unwrap(), &path)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if allowed.contains(&method) {
                assert_ne!(status, 405, "{method} {path}");
            } else {
                assert_eq!(status, 405, "{method} {path}");
                assert_eq!(response.headers()["allow"], allowed.join(",").as_str());
            }
        }
    }
}

#[tokio::test]
async fn huge_or_strange_header_values_are_4xx() {
    let server = TestServer::start().await;
    let big = "A".repeat(64 * 1024);
    let response = server
        .http
        .get(format!("{}/key/public", server.url))
        .header("x-decryption-key", &big)
        .header("x-salt", &big)
        .header("x-comparison-key", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(detail(response, 401).await, "Authentication failed");
    let response = server.download_by_header(Method::GET, "x", &big).await;
    assert!(detail(response, 400).await.contains("unwrapped"));
    let response = server
        .authed(Method::GET, &server.download_path("x"))
        .header(
            "x-blob-key",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(detail(response, 400).await.contains("x-blob-key"));
    // Past the header limit the connection answers 431 before any handler runs.
    let response = server
        .authed(Method::GET, "/key/public")
        .header("x-padding", "B".repeat(200 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
}

#[tokio::test]
async fn oversized_or_non_utf8_fields_are_4xx_and_store_nothing() {
    let server = TestServer::start().await;
    let pem = server.public_key().await;
    let many: serde_json::Map<String, serde_json::Value> = (0..3000)
        .map(|i| (format!("r{i}"), serde_json::Value::String(pem.clone())))
        .collect();
    let cases: Vec<(Form, u16)> = vec![
        (
            Form::new()
                .text("public-keys", serde_json::Value::Object(many).to_string())
                .part("file", Part::bytes(b"x".to_vec())),
            413,
        ),
        (
            Form::new()
                .text("public-keys", "x".repeat(3 << 20))
                .part("file", Part::bytes(b"x".to_vec())),
            413,
        ),
        (
            Form::new()
                .part("public-keys", Part::bytes(b"{\"a\": \"\xff\"}".to_vec()))
                .part("file", Part::bytes(b"x".to_vec())),
            400,
        ),
        (
            Form::new()
                .text("public-keys", recipients(&server).await)
                .part("overwrite", Part::bytes(b"\xfftrue".to_vec()))
                .part("file", Part::bytes(b"x".to_vec())),
            400,
        ),
    ];
    for (form, status) in cases {
        let response = server.upload_form("f.bin", form).await;
        assert!(!detail(response, status).await.is_empty());
    }
    let few: serde_json::Map<String, serde_json::Value> = (0..101)
        .map(|i| (format!("r{i}"), serde_json::Value::String("x".into())))
        .collect();
    let response = server
        .authed(Method::POST, &server.upload_path("f.bin"))
        .multipart(
            Form::new()
                .text("public-keys", serde_json::Value::Object(few).to_string())
                .part("file", Part::bytes(b"x".to_vec())),
        )
        .send()
        .await
        .unwrap();
    assert!(detail(response, 400).await.contains("at most 100"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.raw_names().await.is_empty());
}

#[tokio::test]
async fn wrapped_keys_that_are_huge_or_not_base64_are_4xx() {
    let server = TestServer::start().await;
    server.upload_ok("k", b"x").await;
    for key in [
        "not base64 !!!".to_owned(),
        "QUJD".repeat(100),
        "A".repeat(10_000_000),
    ] {
        let response = server.download("k", &key).await;
        let status = response.status().as_u16();
        assert!(status == 400 || status == 413, "{status}");
    }
}

#[tokio::test]
async fn a_get_with_a_100_mb_body_is_refused_without_reading_it() {
    let server = TestServer::start().await;
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 100000000\r\n\r\n",
        server.download_path("x"),
        credential_lines()
    );
    let mut request = head.into_bytes();
    request.extend(std::iter::repeat_n(b'a', 1 << 20));
    let answer = raw_exchange(&server, &request, None).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let server = TestServer::start_with(Options {
        limits: Limits {
            body_idle_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        connection: ConnectionLimits {
            header_read_timeout: Duration::from_millis(500),
            ..ConnectionLimits::default()
        },
        ..Options::default()
    })
    .await;
    // Headers that never finish: the connection is closed without a handler running.
    let started = std::time::Instant::now();
    let answer = raw_exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", None).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!answer.contains("200 OK"), "{answer}");
    // A body that stops arriving: the upload fails with a reason, and nothing is stored.
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\n{}Content-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: 100000\r\n\r\n--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nsome",
        server.upload_path("slow.bin"),
        credential_lines()
    );
    let answer = raw_exchange(&server, request.as_bytes(), Some(Duration::from_secs(2))).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("stopped arriving"), "{answer}");
    assert!(server.raw_names().await.is_empty());
}

#[tokio::test]
async fn upload_size_and_concurrent_transfers_are_limited() {
    let server = TestServer::start_with(Options {
        limits: Limits {
            max_upload_bytes: Some(1000),
            max_concurrent_transfers: 1,
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;
    let response = server.upload("big.bin", &[0u8; 1001], None).await;
    assert!(detail(response, 413).await.contains("1000 bytes"));
    assert!(server.raw_names().await.is_empty());

    // One transfer holds the only slot (its body is slow); the next one is told to come back.
    let slow = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\n{}Content-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: 100000\r\n\r\n--B\r\n",
        server.upload_path("slow.bin"),
        credential_lines()
    );
    let mut holder = server.connect().await;
    holder.write_all(slow.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = server.upload("second.bin", b"x", None).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(detail(response, 503).await.contains("too many transfers"));
    drop(holder);
}

#[tokio::test]
async fn repeated_wrong_credentials_are_throttled_with_retry_after() {
    let server = TestServer::start().await;
    let wrong = || {
        server
            .http
            .get(format!("{}/key/public", server.url))
            .header("x-decryption-key", "wrong")
            .header("x-salt", "wrong")
            .header("x-comparison-key", "wrong")
    };
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(wrong().send().await.unwrap().status().as_u16());
    }
    assert!(statuses[..20].iter().all(|&s| s == 401), "{statuses:?}");
    let response = wrong().send().await.unwrap();
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(detail(response, 429).await.contains("too many failed"));
}

#[tokio::test]
async fn unreachable_storage_at_start_is_reported_and_answered_with_503() {
    // Nothing listens on this port: the server must still start and say why it is not ready.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let connection_string = format!(
        "AccountName=devstoreaccount1;AccountKey=AAAA;BlobEndpoint=http://127.0.0.1:{closed_port}/devstoreaccount1"
    );
    let storage = Storage::open(Backend::Azure(
        AzureAccount::from_connection_string(&connection_string).unwrap(),
    ))
    .unwrap();
    let url = common::serve_storage(storage).await;
    let response = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("storage unavailable"),
        "{body}"
    );
    let response =
        common::with_credentials(reqwest::Client::new().post(format!("{url}/upload/box/x")))
            .multipart(Form::new().text("public-keys", "{}"))
            .send()
            .await
            .unwrap();
    assert!(detail(response, 503).await.contains("storage unavailable"));
}

#[tokio::test]
async fn a_full_disk_is_507_and_leaves_no_partial_file() {
    if std::env::var(common::AZURE_ENV).is_ok() {
        return; // A local disk is what this test fills.
    }
    let server = TestServer::start().await;
    let container = server.data_dir().join(common::CONTAINER);
    let mounted = common::isolated_command("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&container)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let response = server.upload("large.bin", &vec![1u8; 4 << 20], None).await;
    let status = response.status().as_u16();
    let text = detail(response, status).await;
    let leftovers = server.raw_names().await;
    let _ = common::isolated_command("umount").arg(&container).status();
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("storage is full"), "{text}");
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Builds a multipart body from (field, content) parts with boundary `B`, cut at `keep` bytes.
fn multipart_body(parts: &[(&str, Vec<u8>)], keep: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content) in parts {
        body.extend_from_slice(
            format!(
                "--B\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--B--\r\n");
    body.truncate(keep);
    body
}

#[test]
fn arbitrary_multipart_forms_never_cause_a_server_error() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let recipients_json = runtime.block_on(recipients(&server)).into_bytes();
    let content = prop_oneof![
        Just(recipients_json),
        Just(b"true".to_vec()),
        Just(b"{}".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..300),
    ];
    let name = prop_oneof![
        Just("public-keys"),
        Just("file"),
        Just("overwrite"),
        Just("other")
    ];
    let parts = proptest::collection::vec((name, content), 0..5);
    let config = ProptestConfig::with_cases(64);
    proptest!(config, |(parts in parts, keep in any::<prop::sample::Index>(), whole in any::<bool>())| {
        let full = multipart_body(&parts, usize::MAX);
        let body = if whole { full.clone() } else { multipart_body(&parts, keep.index(full.len() + 1)) };
        let status = runtime.block_on(async {
            server
                .authed(Method::POST, &server.upload_path("prop.bin"))
                .header("content-type", "multipart/form-data; boundary=B")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        prop_assert!([200, 400, 409, 413, 422].contains(&status), "status {}", status);
    });
    let names = runtime.block_on(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.raw_names().await
    });
    assert!(names.iter().all(|n| n == "prop.bin"), "{names:?}");
}

/// Sends `head`, then each piece after its pause, to `address` while reading the answer;
/// returns what the server answered within `wait`.
async fn answer_while_sending(
    address: &str,
    head: String,
    pieces: Vec<(Duration, bytes::Bytes)>,
    wait: Duration,
) -> String {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for (pause, piece) in pieces {
            tokio::time::sleep(pause).await;
            writer.write_all(&piece).await?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, reader.read_to_end(&mut answer)).await;
    sender.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends an upload whose first part header never ends (20 MiB of it) to `address`; returns
/// what the server answered.
async fn send_endless_part_header(address: String, path: String) -> String {
    static MEBIBYTE: [u8; 1 << 20] = [b'x'; 1 << 20];
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{}Content-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: 1000000000\r\n\r\n--B\r\nX-Endless: ",
        credential_lines()
    );
    let pieces = vec![(Duration::ZERO, bytes::Bytes::from_static(&MEBIBYTE)); 20];
    answer_while_sending(&address, head, pieces, Duration::from_secs(30)).await
}

#[tokio::test]
async fn endless_part_headers_are_refused_before_memory_runs_out() {
    let server = TestServer::start().await;
    let address = server.address().to_owned();
    let answer = send_endless_part_header(address, server.upload_path("h.bin")).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("multipart headers are larger"), "{answer}");
}

#[tokio::test]
async fn names_the_local_backend_reserves_are_400_without_the_name() {
    let server = TestServer::start().await;
    // `#` and digits end object_store's own part files on a local disk; `%23` is `#`.
    let name = "dir/p-42%237";
    let response = server.upload(name, b"x", None).await;
    if std::env::var(common::AZURE_ENV).is_ok() {
        assert_eq!(response.status(), 200, "Azure stores any such name");
        return;
    }
    let text = detail(response, 400).await;
    assert!(text.contains("local backend"), "{text}");
    assert!(!text.contains("p-42"), "{text}");
    let response = server.download(name, "irrelevant").await;
    assert_eq!(response.status(), 400);
    let wrapped = server.upload_ok("dir/other", b"x").await;
    let text = detail(server.download(name, &wrapped).await, 400).await;
    assert!(!text.contains("p-42"), "{text}");
    assert!(server.raw_names().await.iter().all(|n| !n.contains("p-42")));
}

#[tokio::test]
async fn names_with_invisible_format_characters_are_400_and_store_nothing() {
    let server = TestServer::start().await;
    // U+202E RIGHT-TO-LEFT OVERRIDE, U+2066 LEFT-TO-RIGHT ISOLATE, U+200B ZERO WIDTH SPACE.
    for name in [
        "invoice%E2%80%AEfdp.exe",
        "a%E2%81%A6b",
        "zero%E2%80%8Bwidth",
    ] {
        let response = server.upload(name, b"x", None).await;
        assert!(
            detail(response, 400).await.contains("format character"),
            "{name}"
        );
        let response = server.download(name, "irrelevant").await;
        assert!(
            detail(response, 400).await.contains("format character"),
            "{name}"
        );
    }
    assert!(server.raw_names().await.is_empty());
}

#[tokio::test]
async fn endless_part_headers_from_eight_clients_keep_memory_per_transfer() {
    if std::env::var(common::AZURE_ENV).is_ok() {
        return; // The headers never reach storage; once, on the local backend, is enough.
    }
    let server = common::BinaryServer::start(&[]).await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let before = server.memory_kib("VmHWM");
    let path = format!("/upload/{}/h.bin", common::CONTAINER);
    let clients = (0..8).map(|_| send_endless_part_header(address.clone(), path.clone()));
    let answers = futures::future::join_all(clients).await;
    let growth_mib = server.memory_kib("VmHWM").saturating_sub(before) / 1024;
    // The README promises about 4 MiB per upload.
    assert!(growth_mib < 8 * 4, "peak memory grew by {growth_mib} MiB");
    for answer in answers {
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_not_stored() {
    let server = TestServer::start().await;
    let recipients = recipients(&server).await;
    let body = format!(
        "--B\r\nContent-Disposition: form-data; name=\"public-keys\"\r\n\r\n{recipients}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nall of it\r\n\
         --B--\r\n"
    );
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\n{}Content-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: {}\r\n\r\n{body}",
        server.upload_path("short.bin"),
        credential_lines(),
        body.len() + 100
    );
    let mut stream = server.connect().await;
    stream.write_all(request.as_bytes()).await.unwrap();
    // Half-close: the promised 100 bytes will never come.
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.raw_names().await.is_empty());
}

/// Sends `head` at once and then `body` one byte every 300 ms (well within the idle timeout);
/// returns what the server answered, or "" if it kept waiting for 15 s.
async fn trickle(server: &TestServer, head: String, body: Vec<u8>) -> String {
    let body = bytes::Bytes::from(body);
    let pieces = (0..body.len())
        .map(|i| (Duration::from_millis(300), body.slice(i..i + 1)))
        .collect();
    let address = server.address();
    answer_while_sending(address, head, pieces, Duration::from_secs(15)).await
}

#[tokio::test]
async fn trickling_bodies_are_cut_off_after_the_grace_period_and_free_their_slot() {
    let server = TestServer::start_with(Options {
        limits: Limits {
            body_grace: Duration::from_secs(1),
            body_min_rate: 1000,
            max_concurrent_transfers: 1,
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;
    let wrapped = server.upload_ok("kept.bin", b"x").await;
    let form = format!("decryption-key={wrapped}");
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n",
        server.download_path("kept.bin"),
        credential_lines(),
        form.len()
    );
    let answer = trickle(&server, head, form.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("slower than 1000 bytes per second"),
        "{answer}"
    );
    let body = b"--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nslow".to_vec();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\n{}Content-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: 100000\r\n\r\n",
        server.upload_path("slow.bin"),
        credential_lines()
    );
    let answer = trickle(&server, head, body).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // The only transfer slot is free again.
    server.upload_ok("after.bin", b"y").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!server.raw_names().await.contains(&"slow.bin".to_owned()));
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_says_the_connection_closes() {
    let server = TestServer::start().await;
    // Refused at the path, long before the declared body arrives.
    let head = format!(
        "POST /upload/Not_A_Container/x.txt HTTP/1.1\r\nHost: x\r\n{}\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 200000\r\n\r\n",
        credential_lines()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(&[b'x'; 1000]);
    let answer = raw_exchange(&server, &request, None)
        .await
        .to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");

    // A request read to its end keeps its connection.
    let response = server.upload("kept.txt", b"kept", None).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("connection").is_none());
}
