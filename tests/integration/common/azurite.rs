//! Containers on an Azure account (Azurite in CI), one per test server.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blobprox::storage::{AzureAccount, Backend};
use object_store::ObjectStore;
use object_store::azure::MicrosoftAzureBuilder;

/// The fields of a connection string, by lower-case name.
fn fields(connection_string: &str) -> HashMap<String, String> {
    connection_string
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_ascii_lowercase(), value.to_owned()))
        .collect()
}

/// Creates a fresh container and returns the backend, its name and direct access to it.
pub async fn new_container(connection_string: &str) -> (Backend, String, Arc<dyn ObjectStore>) {
    let fields = fields(connection_string);
    let (account, key, endpoint) = (
        &fields["accountname"],
        &fields["accountkey"],
        fields["blobendpoint"].trim_end_matches('/').to_owned(),
    );
    let container = format!("t{}", uuid::Uuid::new_v4().simple());
    create_container(account, key, &endpoint, &container).await;
    let raw = MicrosoftAzureBuilder::new()
        .with_account(account)
        .with_access_key(key)
        .with_endpoint(endpoint.clone())
        .with_allow_http(true)
        .with_container_name(&container)
        .build()
        .unwrap();
    let backend = Backend::Azure(AzureAccount::from_connection_string(connection_string).unwrap());
    (backend, container, Arc::new(raw))
}

/// Create Container, signed with the account key (object_store cannot create containers).
async fn create_container(account: &str, key: &str, endpoint: &str, container: &str) {
    let url = format!("{endpoint}/{container}?restype=container");
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let version = "2021-08-06";
    let path = url::Url::parse(&url).unwrap().path().to_owned();
    let string_to_sign = format!(
        "PUT\n{}x-ms-date:{date}\nx-ms-version:{version}\n/{account}{path}\nrestype:container",
        "\n".repeat(11)
    );
    let secret = STANDARD.decode(key).unwrap();
    let signature = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &secret),
        string_to_sign.as_bytes(),
    );
    let response = reqwest::Client::new()
        .put(&url)
        .header("x-ms-date", date)
        .header("x-ms-version", version)
        .header("content-length", "0")
        .header(
            "authorization",
            format!(
                "SharedKey {account}:{}",
                STANDARD.encode(signature.as_ref())
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
}
