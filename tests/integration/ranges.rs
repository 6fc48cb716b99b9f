//! Range reads and the stream format over HTTP.

use crate::common;

use blobprox::crypto::stream::{DEFAULT_SEGMENT_SIZE, HEADER_LEN, TAG_LEN};
use blobprox::transfer::BlobFormat;
use common::{TestServer, detail};
use reqwest::{Method, Response};

const SEGMENT: u64 = DEFAULT_SEGMENT_SIZE as u64;

fn content(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9) >> 13) as u8)
        .collect()
}

async fn get(server: &TestServer, name: &str, wrapped: &str, range: Option<&str>) -> Response {
    get_with(server, Method::GET, name, wrapped, range).await
}

async fn get_with(
    server: &TestServer,
    method: Method,
    name: &str,
    wrapped: &str,
    range: Option<&str>,
) -> Response {
    let mut request = server
        .authed(method, &server.download_path(name))
        .header("x-blob-key", wrapped);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn stream_blobs_are_the_default_and_serve_the_three_range_forms() {
    let server = TestServer::start().await;
    let data = content(3 * SEGMENT as usize + 100);
    let wrapped = server.upload_ok("r.bin", &data).await;
    let stored = server.raw_read("r.bin").await;
    assert_eq!(&stored[..4], b"\x89BPX");
    assert_eq!(stored.len(), HEADER_LEN + data.len() + 4 * TAG_LEN);

    let size = data.len() as u64;
    let boundary = SEGMENT;
    let cases = [
        ("bytes=0-9".to_owned(), 0..10),
        (
            format!("bytes={}-{}", boundary - 1, boundary),
            boundary - 1..boundary + 1,
        ),
        (
            format!("bytes={boundary}-{}", 2 * boundary - 1),
            boundary..2 * boundary,
        ),
        (format!("bytes=5-{}", size + 1000), 5..size),
        (format!("bytes={}-", size - 3), size - 3..size),
        ("bytes=-1024".to_owned(), size - 1024..size),
        (format!("bytes=-{}", size * 2), 0..size),
    ];
    for (header, expected) in cases {
        let response = get(&server, "r.bin", &wrapped, Some(&header)).await;
        assert_eq!(response.status(), 206, "{header}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-range"],
            format!("bytes {}-{}/{size}", expected.start, expected.end - 1).as_str(),
            "{header}"
        );
        assert_eq!(
            headers["content-length"],
            (expected.end - expected.start).to_string().as_str()
        );
        assert_eq!(headers["accept-ranges"], "bytes");
        let body = response.bytes().await.unwrap();
        assert!(
            body == data[expected.start as usize..expected.end as usize],
            "{header}"
        );
    }
}

#[tokio::test]
async fn unsatisfiable_ranges_are_416_and_odd_ones_get_the_whole_body() {
    let server = TestServer::start().await;
    let data = content(1000);
    let wrapped = server.upload_ok("u.bin", &data).await;
    for header in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let response = get(&server, "u.bin", &wrapped, Some(header)).await;
        assert_eq!(response.headers()["content-range"], "bytes */1000");
        assert!(detail(response, 416).await.contains("range"), "{header}");
    }
    for header in ["bytes=0-1,5-6", "bytes=9-2", "bytes=abc", "pages=1-2"] {
        let response = get(&server, "u.bin", &wrapped, Some(header)).await;
        assert_eq!(response.status(), 200, "{header}");
        assert_eq!(response.bytes().await.unwrap(), data, "{header}");
    }
}

#[tokio::test]
async fn empty_files_download_and_refuse_every_range() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("empty", b"").await;
    let response = get(&server, "empty", &wrapped, None).await;
    assert_eq!(response.headers()["content-length"], "0");
    assert!(response.bytes().await.unwrap().is_empty());
    let response = get(&server, "empty", &wrapped, Some("bytes=0-")).await;
    assert_eq!(response.status(), 416);
}

#[tokio::test]
async fn fernet_blobs_answer_ranges_with_the_whole_body() {
    let server = TestServer::start_format(BlobFormat::Fernet).await;
    let data = content(5000);
    let wrapped = server.upload_ok("f.bin", &data).await;
    let response = get(&server, "f.bin", &wrapped, Some("bytes=0-9")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "5000");
    assert_eq!(response.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn head_with_a_range_answers_the_partial_headers() {
    let server = TestServer::start().await;
    let wrapped = server.upload_ok("h.bin", &content(300_000)).await;
    let response = get_with(&server, Method::HEAD, "h.bin", &wrapped, Some("bytes=-100")).await;
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        "bytes 299900-299999/300000"
    );
    assert_eq!(response.headers()["content-length"], "100");
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_segment_found_after_the_headers_aborts_the_connection() {
    let server = TestServer::start().await;
    let data = content(4 * SEGMENT as usize);
    let wrapped = server.upload_ok("c.bin", &data).await;
    let mut stored = server.raw_read("c.bin").await;
    stored[HEADER_LEN + 2 * (SEGMENT as usize + TAG_LEN) + 10] ^= 0x80;
    server.raw_write("c.bin", &stored).await;

    let response = get(&server, "c.bin", &wrapped, None).await;
    assert_eq!(
        response.status(),
        200,
        "the damage is past the first segments"
    );
    assert!(
        response.bytes().await.is_err(),
        "the body must not end cleanly"
    );
    // A range that does not touch the damaged segment is still served.
    let response = get(&server, "c.bin", &wrapped, Some("bytes=0-99")).await;
    assert_eq!(response.bytes().await.unwrap(), data[..100]);
}

#[tokio::test]
async fn truncation_and_wrong_keys_are_refused_before_any_byte() {
    let server = TestServer::start().await;
    let data = content(3 * SEGMENT as usize);
    let wrapped = server.upload_ok("t.bin", &data).await;
    let other = server.upload_ok("other.bin", &data).await;
    let response = get(&server, "t.bin", &other, None).await;
    assert!(detail(response, 403).await.contains("does not open"));
    let stored = server.raw_read("t.bin").await;
    // Cut exactly at a segment boundary: the sizes still fit, the last-segment flag does not.
    server
        .raw_write(
            "t.bin",
            &stored[..stored.len() - SEGMENT as usize - TAG_LEN],
        )
        .await;
    for range in [None, Some("bytes=0-9")] {
        let response = get(&server, "t.bin", &wrapped, range).await;
        assert!(
            detail(response, 502).await.contains("last segment"),
            "{range:?}"
        );
    }
}
