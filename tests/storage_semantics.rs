//! What storage guarantees under concurrency, disconnects and refused credentials. Runs on the
//! local backend, and on Azure (Azurite) when `BLOBPROX_TEST_AZURE_CONNECTION_STRING` is set.

mod common;

use std::time::Duration;

use blobprox::auth::Authenticator;
use blobprox::http::{self, AppState};
use blobprox::storage::{AzureAccount, Backend, Storage};
use common::{AZURE_ENV, SECRETS, TestServer, detail, load_keys};
use futures::future::join_all;
use tokio::io::AsyncWriteExt;

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
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let recipients = serde_json::json!({ "me": server.public_key().await }).to_string();
    let head = format!(
        "--B\r\nContent-Disposition: form-data; name=\"public-keys\"\r\n\r\n{recipients}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n"
    );
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {address}\r\nx-decryption-key: {}\r\nx-salt: {}\r\n\
         x-comparison-key: {}\r\nContent-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: 100000000\r\n\r\n{head}",
        server.upload_path("dropped.bin"),
        SECRETS.client.decryption_key,
        SECRETS.client.salt,
        SECRETS.client.key,
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
    let state = AppState {
        keys: std::sync::Arc::new(load_keys()),
        storage: std::sync::Arc::new(storage),
        auth: std::sync::Arc::new(Authenticator::new(&SECRETS.api_key)),
        limits: Default::default(),
        upload_policy: Default::default(),
        metrics: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(http::serve(
        listener,
        http::router(state),
        std::future::pending(),
        Duration::ZERO,
    ));
    let response =
        common::with_credentials(reqwest::Client::new().get(format!("{url}/download/anything/x")))
            .header(
                "x-blob-key",
                load_keys()
                    .private_key
                    .public_key()
                    .wrap_key(&blobprox::crypto::data_key::DataKey::generate().unwrap())
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    assert!(
        detail(response, 502)
            .await
            .contains("refused the proxy's credentials")
    );
    let response = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
}
