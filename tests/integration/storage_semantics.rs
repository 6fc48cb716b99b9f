//! What storage guarantees under concurrency, disconnects and refused credentials. Runs on the
//! local backend, and on Azure (Azurite) when `BLOBPROX_TEST_AZURE_CONNECTION_STRING` is set.

use crate::common;

use std::time::Duration;

use blobprox::storage::{AzureAccount, Backend, Storage};
use common::{AZURE_ENV, TestServer, detail, load_keys};
use futures::future::join_all;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RACERS: usize = 10;

fn body_of(racer: usize) -> Vec<u8> {
    // Different lengths and contents, large enough to span several storage parts.
    vec![racer as u8; 5_000_000 + racer * 1000]
}

#[tokio::test]
async fn create_only_uploads_racing_for_one_name_give_one_winner() {
    let server = TestServer::start().await;
    let uploads = (0..RACERS).map(|racer| {
        let server = &server;
        async move {
            (
                racer,
                server.upload("contested.bin", &body_of(racer), None).await,
            )
        }
    });
    let mut winners = Vec::new();
    for (racer, response) in join_all(uploads).await {
        match response.status().as_u16() {
            200 => {
                let body: serde_json::Value = response.json().await.unwrap();
                winners.push((racer, body["keys"]["me"].as_str().unwrap().to_owned()));
            }
            409 => assert_eq!(detail(response, 409).await, "Blob already exists"),
            other => panic!("racer {racer}: unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create-only upload wins");
    let (racer, wrapped) = &winners[0];
    let stored = server
        .download("contested.bin", wrapped)
        .await
        .bytes()
        .await
        .unwrap();
    assert!(
        stored == body_of(*racer),
        "the stored blob is wholly the winner's"
    );
}

#[tokio::test]
async fn overwriting_uploads_racing_for_one_name_never_mix() {
    let server = TestServer::start().await;
    let uploads = (0..RACERS).map(|racer| {
        let server = &server;
        async move {
            let response = server
                .upload("shared.bin", &body_of(racer), Some("true"))
                .await;
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            (racer, body["keys"]["me"].as_str().unwrap().to_owned())
        }
    });
    let keys = join_all(uploads).await;
    // Exactly one upload's key opens the stored blob, and it holds exactly that upload.
    let mut opened = Vec::new();
    for (racer, wrapped) in keys {
        let response = server.download("shared.bin", &wrapped).await;
        if response.status() == 200 {
            let bytes = response.bytes().await.unwrap();
            assert!(
                bytes == body_of(racer),
                "racer {racer}'s key opened a mixed blob"
            );
            opened.push(racer);
        } else {
            assert_eq!(response.status(), 403);
        }
    }
    assert_eq!(opened.len(), 1, "{opened:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.raw_names().await,
        ["shared.bin"],
        "no staged leftovers"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let recipients = serde_json::json!({ "me": server.public_key().await }).to_string();
    let head = format!(
        "--B\r\nContent-Disposition: form-data; name=\"public-keys\"\r\n\r\n{recipients}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n"
    );
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: multipart/form-data; \
         boundary=B\r\nContent-Length: 100000000\r\n\r\n{head}",
        server.upload_path("dropped.bin"),
        server.address(),
        common::credential_lines(),
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Twelve megabytes: enough that parts of it have reached storage.
    for _ in 0..12 {
        stream.write_all(&vec![7u8; 1 << 20]).await.unwrap();
    }
    drop(stream);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.raw_names().await, Vec::<String>::new());
}

/// A download from `url` with a key wrapped for this proxy that opens nothing stored.
async fn download_with_any_key(url: &str) -> reqwest::Response {
    let wrapped = load_keys()
        .private_key
        .public_key()
        .wrap_key(&blobprox::crypto::data_key::DataKey::generate().unwrap())
        .unwrap();
    common::with_credentials(reqwest::Client::new().get(url))
        .header("x-blob-key", wrapped)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn refused_storage_credentials_are_502_naming_storage() {
    let Ok(connection_string) = std::env::var(AZURE_ENV) else {
        eprintln!("skipped: needs {AZURE_ENV} (set by scripts/test.sh)");
        return;
    };
    let wrong = connection_string.replace("AccountKey=", "AccountKey=AAAA");
    let storage = Storage::open(Backend::Azure(
        AzureAccount::from_connection_string(&wrong).unwrap(),
    ))
    .unwrap();
    let error = storage.check_reachable().await.unwrap_err().to_string();
    assert!(error.contains("refused the proxy's credentials"), "{error}");
    let url = common::serve_storage(storage).await;
    let response = download_with_any_key(&format!("{url}/download/anything/x")).await;
    assert!(
        detail(response, 502)
            .await
            .contains("refused the proxy's credentials")
    );
    let response = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
}

/// A TCP forwarder to storage that can be cut, as a network or storage outage would, and that
/// can report copies as Azure may: each status in `copy_statuses` replaces, once, a `success` in
/// an `x-ms-copy-status` header on its way back (all the values have seven letters).
struct Outage {
    endpoint_port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    copy_statuses: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl Outage {
    async fn in_front_of(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint_port = listener.local_addr().unwrap().port();
        let (cut, watcher) = tokio::sync::watch::channel(false);
        let copy_statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let statuses = copy_statuses.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut watcher = watcher.clone();
                if *watcher.borrow() {
                    continue; // Dropped: refused while storage is "down".
                }
                let upstream = upstream.clone();
                let statuses = statuses.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_storage, mut to_storage) = outbound.into_split();
                    let answers = async {
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let read = from_storage.read(&mut buffer).await?;
                            if read == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            rewrite_copy_status(&mut buffer[..read], &statuses);
                            to_client.write_all(&buffer[..read]).await?;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy(&mut from_client, &mut to_storage) => {}
                        _ = answers => {}
                        _ = watcher.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self {
            endpoint_port,
            cut,
            copy_statuses,
        }
    }
}

/// Replaces `success` in `x-ms-copy-status` headers of `bytes` with the next of `statuses`.
fn rewrite_copy_status(bytes: &mut [u8], statuses: &std::sync::Mutex<Vec<&'static str>>) {
    let header = b"x-ms-copy-status: success";
    let mut from = 0;
    while let Some(at) = bytes[from..]
        .windows(header.len())
        .position(|window| window.eq_ignore_ascii_case(header))
    {
        let value = from + at + header.len() - 7;
        let Some(status) = statuses.lock().unwrap().pop() else {
            return;
        };
        bytes[value..value + 7].copy_from_slice(status.as_bytes());
        from = value + 7;
    }
}

/// A proxy whose Azure storage sits behind an [`Outage`]; `None` without Azurite.
async fn server_behind_outage() -> Option<(
    String,
    Outage,
    String,
    std::sync::Arc<dyn object_store::ObjectStore>,
)> {
    let connection_string = std::env::var(AZURE_ENV).ok()?;
    let (_, container, raw) = common::azurite::new_container(&connection_string).await;
    let endpoint = connection_string
        .split(';')
        .find_map(|f| f.strip_prefix("BlobEndpoint="))
        .unwrap();
    let upstream = endpoint
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let outage = Outage::in_front_of(upstream.clone()).await;
    let forwarded =
        connection_string.replace(&upstream, &format!("127.0.0.1:{}", outage.endpoint_port));
    let storage = Storage::open(Backend::Azure(
        AzureAccount::from_connection_string(&forwarded).unwrap(),
    ))
    .unwrap();
    let url = common::serve_storage(storage).await;
    Some((url, outage, container, raw))
}

#[tokio::test]
async fn storage_lost_mid_download_aborts_the_response() {
    let Some((url, outage, container, raw)) = server_behind_outage().await else {
        eprintln!("skipped: needs {AZURE_ENV} (set by scripts/test.sh)");
        return;
    };
    let client = reqwest::Client::new();
    let public_key = common::public_key_at(&url).await;
    let form = reqwest::multipart::Form::new()
        .text(
            "public-keys",
            serde_json::json!({ "me": public_key }).to_string(),
        )
        .part("file", reqwest::multipart::Part::bytes(vec![9u8; 64 << 20]));
    let answer: serde_json::Value =
        common::with_credentials(client.post(format!("{url}/upload/{container}/big.bin")))
            .multipart(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let wrapped = answer["keys"]["me"].as_str().unwrap().to_owned();
    let mut response =
        common::with_credentials(client.get(format!("{url}/download/{container}/big.bin")))
            .header("x-blob-key", wrapped)
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    outage.cut.send(true).unwrap();
    let mut received = first.len();
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break Ok(received),
            Err(error) => break Err(error),
        }
    };
    assert!(
        outcome.is_err(),
        "a clean end after {received} of {} bytes",
        64 << 20
    );
    assert_eq!(
        raw.list(None).try_collect::<Vec<_>>().await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn storage_lost_mid_upload_is_an_error_and_leaves_no_blob() {
    let Some((url, outage, container, raw)) = server_behind_outage().await else {
        eprintln!("skipped: needs {AZURE_ENV} (set by scripts/test.sh)");
        return;
    };
    let client = reqwest::Client::new();
    let public_key = common::public_key_at(&url).await;
    // A file that arrives in 1 MiB pieces; storage goes away after the eighth.
    let cut = outage.cut.clone();
    let pieces = futures::stream::iter(0..48).then(move |index| {
        let cut = cut.clone();
        async move {
            if index == 8 {
                cut.send(true).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, std::io::Error>(vec![5u8; 1 << 20])
        }
    });
    let form = reqwest::multipart::Form::new()
        .text(
            "public-keys",
            serde_json::json!({ "me": public_key }).to_string(),
        )
        .part(
            "file",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(pieces)),
        );
    let response =
        common::with_credentials(client.post(format!("{url}/upload/{container}/lost.bin")))
            .multipart(form)
            .send()
            .await;
    if let Ok(response) = response {
        let status = response.status().as_u16();
        assert_eq!(status, 503, "{:?}", response.text().await);
    }
    outage.cut.send(false).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: Vec<String> = raw
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert!(!names.iter().any(|n| n == "lost.bin"), "{names:?}");
}

#[tokio::test]
async fn abandoned_staged_uploads_are_swept_when_a_container_is_first_used() {
    if std::env::var(AZURE_ENV).is_ok() {
        return; // Backdating a blob needs the local filesystem.
    }
    let server = TestServer::start().await;
    let staging = server
        .data_dir()
        .join(common::CONTAINER)
        .join(".blobprox-staging");
    std::fs::create_dir_all(&staging).unwrap();
    for (name, age_hours) in [("crashed", 48), ("recent", 1)] {
        let file = std::fs::File::create(staging.join(name)).unwrap();
        let modified = std::time::SystemTime::now() - Duration::from_secs(age_hours * 3600);
        file.set_modified(modified).unwrap();
    }
    server
        .upload_ok("first.bin", b"first use of the container")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!staging.join("crashed").exists());
    assert!(staging.join("recent").exists());
}

#[tokio::test]
async fn a_fernet_blob_changed_in_place_during_a_download_never_ends_cleanly() {
    if std::env::var(AZURE_ENV).is_ok() {
        return; // Azure replaces blobs whole; only a local file can change under an open read.
    }
    let server = TestServer::start_format(blobprox::transfer::BlobFormat::Fernet).await;
    let content = vec![b'a'; 32 << 20];
    let wrapped = server.upload_ok("legacy.bin", &content).await;
    let mut response = server
        .download_by_header(reqwest::Method::GET, "legacy.bin", &wrapped)
        .await;
    assert_eq!(response.status(), 200);
    // The first pass has checked the MAC; once a chunk has arrived, the second pass has opened
    // the file and is a few MiB in, waiting for this client.
    let mut received = response.chunk().await.unwrap().unwrap().len();
    let path = server.data_dir().join(common::CONTAINER).join("legacy.bin");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let offset = file.metadata().unwrap().len() - 1000;
    let mut character = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&path).unwrap(),
        &mut character,
        offset,
    )
    .unwrap();
    let replacement = if character[0] == b'A' { b'B' } else { b'A' };
    std::os::unix::fs::FileExt::write_all_at(&file, &[replacement], offset).unwrap();
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert!(outcome.is_err(), "a clean end after {received} bytes");
    assert!(received < content.len(), "{received}");
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains("blobprox_integrity_failures_total{format=\"fernet\"} 1"),
        "{outcome:?} after {received} bytes: {metrics}"
    );
}

#[tokio::test]
async fn part_files_of_an_upload_killed_mid_body_are_swept_after_a_restart() {
    if std::env::var(AZURE_ENV).is_ok() {
        return; // Azure drops uncommitted blocks itself; the part files are a local matter.
    }
    let mut server = common::BinaryServer::start(&[]).await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let recipients =
        serde_json::json!({ "me": common::public_key_at(&server.url).await }).to_string();
    let head = format!(
        "POST /upload/{}/killed.bin HTTP/1.1\r\nHost: x\r\n{}Content-Type: multipart/form-data; \
         boundary=B\r\n\
         Content-Length: 100000000\r\n\r\n--B\r\nContent-Disposition: form-data; \
         name=\"public-keys\"\r\n\r\n{recipients}\r\n--B\r\nContent-Disposition: form-data; \
         name=\"file\"; filename=\"f\"\r\n\r\n",
        common::CONTAINER,
        common::credential_lines(),
    );
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..4 {
        stream.write_all(&vec![7u8; 1 << 20]).await.unwrap();
    }
    let staging = server
        .data_dir
        .path()
        .join(common::CONTAINER)
        .join(".blobprox-staging");
    let leftovers = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&staging)
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    for _ in 0..100 {
        if !leftovers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().unwrap(); // SIGKILL: no cleanup runs.
    server.child.wait().unwrap();
    drop(stream);
    let killed = leftovers();
    assert!(
        killed.iter().any(|p| p.to_string_lossy().contains('#')),
        "{killed:?}"
    );
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(48 * 3600);
    for path in &killed {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(two_days_ago).unwrap();
    }

    let restarted = common::BinaryServer::start_on(server.data_dir.clone(), &[]).await;
    let response = download_with_any_key(&format!(
        "{}/download/{}/absent",
        restarted.url,
        common::CONTAINER
    ))
    .await;
    assert_eq!(response.status(), 404); // The container's first use starts the sweep.
    for _ in 0..100 {
        if leftovers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leftovers(), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn an_upload_is_acknowledged_only_once_azure_reports_its_copy_complete() {
    let Some((url, outage, container, _)) = server_behind_outage().await else {
        eprintln!("skipped: needs {AZURE_ENV} (set by scripts/test.sh)");
        return;
    };
    let public_key = common::public_key_at(&url).await;
    // Larger than one 8 MiB part: smaller uploads are published by one put, not by a copy.
    let content: Vec<u8> = (0..9 << 20).map(|i: u32| (i % 251) as u8).collect();
    let upload = |name: &str| {
        let form = reqwest::multipart::Form::new()
            .text(
                "public-keys",
                serde_json::json!({ "me": public_key }).to_string(),
            )
            .text("overwrite", "true")
            .part("file", reqwest::multipart::Part::bytes(content.clone()));
        common::with_credentials(
            reqwest::Client::new().post(format!("{url}/upload/{container}/{name}")),
        )
        .multipart(form)
        .send()
    };
    // Popped from the end: the copy's own answer and the next look say pending, then success.
    *outage.copy_statuses.lock().unwrap() = vec!["pending", "pending"];
    let response = upload("slow-copy.bin").await.unwrap();
    let body = common::json_with_status(response, 200).await;
    let wrapped = body["keys"]["me"].as_str().unwrap().to_owned();
    assert!(
        outage.copy_statuses.lock().unwrap().is_empty(),
        "the status was looked at again"
    );
    let response = common::with_credentials(
        reqwest::Client::new().get(format!("{url}/download/{container}/slow-copy.bin")),
    )
    .header("x-blob-key", wrapped)
    .send()
    .await
    .unwrap();
    assert!(response.bytes().await.unwrap() == content);

    *outage.copy_statuses.lock().unwrap() = vec!["aborted", "aborted"];
    let response = upload("failed-copy.bin").await.unwrap();
    assert!(
        detail(response, 503)
            .await
            .contains("did not complete the copy"),
    );
}

#[tokio::test]
async fn transfers_share_a_buffer_budget_smaller_than_one_part_and_all_succeed() {
    // 1 MiB, the smallest budget: less than one Azure part, so parts shrink to fit, and only one
    // part in the whole process is buffered at a time; the others wait instead of failing.
    let server = TestServer::start_with(common::Options {
        max_buffer_bytes: Some(1),
        ..common::Options::default()
    })
    .await;
    let everything = async {
        let uploads = (0..4).map(|racer| {
            let server = &server;
            async move {
                let name = format!("budget-{racer}.bin");
                (
                    racer,
                    name.clone(),
                    server.upload_ok(&name, &body_of(racer)).await,
                )
            }
        });
        let uploaded = join_all(uploads).await;
        let downloads = uploaded.iter().map(|(racer, name, key)| {
            let server = &server;
            async move {
                let response = server.download(name, key).await;
                assert_eq!(response.status(), 200);
                assert!(
                    response.bytes().await.unwrap() == body_of(*racer),
                    "{name} differs"
                );
            }
        });
        join_all(downloads).await;
    };
    tokio::time::timeout(Duration::from_secs(120), everything)
        .await
        .expect("transfers waiting for the buffer budget never got it");
}
