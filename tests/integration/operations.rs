//! The operational surface: probes, metrics, request ids, OpenAPI and the docs page.

use crate::common;

use common::TestServer;
use reqwest::Method;

#[tokio::test]
async fn metrics_count_requests_by_route_template_without_blob_names() {
    let server = TestServer::start().await;
    let wrapped = server
        .upload_ok("patient-4711/scan.bin", b"secret scan")
        .await;
    server
        .download("patient-4711/scan.bin", &wrapped)
        .await
        .bytes()
        .await
        .unwrap();
    server.get_anonymous("/key/public").await;
    let response = server.get_anonymous("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for expected in [
        "blobprox_requests_total{route=\"/upload/{container}/{*blob}\",status=\"200\"} 1",
        "blobprox_requests_total{route=\"/download/{container}/{*blob}\",status=\"200\"} 1",
        "blobprox_requests_total{route=\"/key/public\",status=\"401\"} 1",
        "blobprox_auth_failures_total 1",
        "blobprox_request_duration_seconds_count{route=\"/download/{container}/{*blob}\"} 1",
        "# TYPE blobprox_requests_in_flight gauge",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let sent: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("blobprox_sent_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent >= b"secret scan".len() as u64);
    assert!(!text.contains("patient-4711"));
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = TestServer::start().await;
    let response = server
        .authed(Method::GET, "/key/public")
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let response = server.get_anonymous("/nowhere").await;
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
}

#[tokio::test]
async fn readiness_says_why_storage_is_not_ready() {
    let readyz = |server: &TestServer| server.http.get(format!("{}/readyz", server.url)).send();
    let healthy = TestServer::start().await;
    assert_eq!(readyz(&healthy).await.unwrap().status(), 200);
    if std::env::var(common::AZURE_ENV).is_ok() {
        return; // The local directory is what this test removes.
    }
    // Answers are reused for a few seconds, so the broken server is asked for the first time
    // only after its directory is gone.
    let broken = TestServer::start().await;
    std::fs::remove_dir_all(broken.data_dir()).unwrap();
    let response = readyz(&broken).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("No such file"), "{body}");
    assert!(
        !detail.contains(&broken.data_dir().display().to_string()),
        "no server paths"
    );
}

#[tokio::test]
async fn openapi_documents_every_route_and_each_documented_route_exists() {
    let server = TestServer::start().await;
    let response = server.get_anonymous("/openapi.json").await;
    let document: serde_json::Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort();
    assert_eq!(
        documented,
        [
            "/docs",
            "/download/{container}/{blob}",
            "/healthz",
            "/key/public",
            "/metrics",
            "/openapi.json",
            "/readyz",
            "/share/{container}/{blob}",
            "/upload/{container}/{blob}"
        ]
    );
    for (path, operations) in paths {
        let concrete = path
            .replace("{container}", &server.container)
            .replace("{blob}", "a/b.txt");
        for method in operations.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = server
                .authed(method.clone(), &concrete)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!(status != 404 && status != 405, "{method} {path}: {status}");
            for code in operations[method.as_str().to_lowercase()]["responses"]
                .as_object()
                .unwrap()
                .keys()
            {
                assert!(code.parse::<u16>().is_ok(), "{path}: {code}");
            }
        }
    }
    for (path, method) in [
        ("/upload/{container}/{blob}", "post"),
        ("/download/{container}/{blob}", "get"),
    ] {
        let responses = &paths[path][method]["responses"];
        for status in ["400", "401", "404", "429", "502", "503"] {
            assert!(
                responses.get(status).is_some(),
                "{method} {path} lacks {status}"
            );
        }
    }
    let page = server.get_text("/docs").await;
    assert!(page.contains("fetch(\"openapi.json\")"));
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "no CDN"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_upload_is_counted_and_leaves_nothing_in_flight() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\n{}Content-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: 100000\r\n\r\n--B\r\n",
        server.upload_path("gone.bin"),
        common::credential_lines()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(stream);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let text = server.get_text("/metrics").await;
    let upload_requests: u64 = text
        .lines()
        .filter(|line| line.starts_with("blobprox_requests_total{route=\"/upload/"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(upload_requests, 1, "{text}");
    // Only the /metrics request itself is still in flight.
    assert!(text.contains("blobprox_requests_in_flight 1"), "{text}");
}
