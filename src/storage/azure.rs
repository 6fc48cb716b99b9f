//! Azure Blob Storage accounts: connection strings, account URLs and credentials.

use std::collections::HashMap;
use std::time::Duration;

use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use serde::Deserialize;

use super::error::summarize;
use super::{STAGING_PREFIX, StorageError};

/// The storage emulator's well-known account and key (public, documented by Microsoft).
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How to reach and sign in to an Azure storage account.
#[derive(Clone)]
pub struct AzureAccount {
    account: String,
    endpoint: String,
    credential: AzureCredential,
}

/// The proxy's own credential for Azure.
#[derive(Clone)]
enum AzureCredential {
    /// A shared account key (connection strings, Azurite).
    AccessKey(String),
    /// A service principal, as in the original's `STORAGE_CREDS` file.
    ServicePrincipal(ServicePrincipal),
    /// Whatever the environment offers: `AZURE_*` variables, workload or managed identity.
    Environment,
}

/// The JSON of a `STORAGE_CREDS` file.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePrincipal {
    tenant_id: String,
    client_id: String,
    client_secret: String,
}

impl std::fmt::Debug for AzureAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credential itself.
        let credential = match self.credential {
            AzureCredential::AccessKey(_) => "account key",
            AzureCredential::ServicePrincipal(_) => "service principal",
            AzureCredential::Environment => "environment",
        };
        write!(
            f,
            "Azure account {} at {} ({credential})",
            self.account, self.endpoint
        )
    }
}

impl AzureAccount {
    /// Parses an Azure connection string (`AccountName`, `AccountKey`, optional `BlobEndpoint`,
    /// or `UseDevelopmentStorage=true`).
    pub fn from_connection_string(text: &str) -> Result<Self, StorageError> {
        let fields: HashMap<String, String> = text
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let field = |name: &str| fields.get(&name.to_ascii_lowercase()).cloned();
        if field("UseDevelopmentStorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Self {
                account: EMULATOR_ACCOUNT.into(),
                endpoint: format!("http://127.0.0.1:10000/{EMULATOR_ACCOUNT}"),
                credential: AzureCredential::AccessKey(EMULATOR_KEY.into()),
            });
        }
        let missing = |name: &str| {
            StorageError::Config(format!("AZURE_STORAGE_CONNECTION_STRING has no {name}"))
        };
        let account = field("AccountName").ok_or_else(|| missing("AccountName"))?;
        let key = field("AccountKey").ok_or_else(|| missing("AccountKey"))?;
        let endpoint = field("BlobEndpoint").unwrap_or_else(|| {
            let protocol = field("DefaultEndpointsProtocol").unwrap_or_else(|| "https".into());
            let suffix = field("EndpointSuffix").unwrap_or_else(|| "core.windows.net".into());
            format!("{protocol}://{account}.blob.{suffix}")
        });
        Ok(Self {
            account,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            credential: AzureCredential::AccessKey(key),
        })
    }

    /// An account URL (`https://ACCOUNT.blob.core.windows.net`) with the service principal in
    /// `creds_file`, or with the environment's credential when that file does not exist.
    pub fn from_account_url(url: &str, creds_file: &std::path::Path) -> Result<Self, StorageError> {
        let host = url
            .strip_prefix("https://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|host| !host.contains('/'))
            .ok_or_else(|| {
                StorageError::Config(format!(
                    "{url}: expected an account URL such as https://ACCOUNT.blob.core.windows.net"
                ))
            })?;
        let account = host.split('.').next().unwrap_or_default().to_owned();
        let credential = match std::fs::read_to_string(creds_file) {
            Ok(text) => {
                AzureCredential::ServicePrincipal(serde_json::from_str(&text).map_err(|e| {
                    StorageError::Config(format!(
                        "{}: expected JSON with tenantId, clientId and clientSecret ({e})",
                        creds_file.display()
                    ))
                })?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AzureCredential::Environment,
            Err(e) => {
                return Err(StorageError::Config(format!(
                    "{}: {e}",
                    creds_file.display()
                )));
            }
        };
        Ok(Self {
            account,
            endpoint: format!("https://{host}"),
            credential,
        })
    }

    /// The store of one container.
    pub(super) fn container_store(&self, container: &str) -> Result<MicrosoftAzure, StorageError> {
        let builder = match &self.credential {
            AzureCredential::Environment => MicrosoftAzureBuilder::from_env(),
            _ => MicrosoftAzureBuilder::new(),
        };
        let builder = builder
            .with_account(&self.account)
            .with_endpoint(self.endpoint.clone())
            .with_allow_http(self.endpoint.starts_with("http://"))
            .with_container_name(container)
            .with_http_connector(CopyStatusConnector)
            // Throttling and 5xx are retried with backoff, briefly: past that the client gets 503.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 5,
                retry_timeout: Duration::from_secs(30),
            });
        let builder = match &self.credential {
            AzureCredential::AccessKey(key) => builder.with_access_key(key),
            AzureCredential::ServicePrincipal(principal) => builder
                .with_client_secret_authorization(
                    &principal.client_id,
                    &principal.client_secret,
                    &principal.tenant_id,
                ),
            AzureCredential::Environment => builder,
        };
        builder
            .build()
            .map_err(|e| StorageError::Config(e.to_string()))
    }
}

/// A blob's `x-ms-copy-status` (`pending`, `success`, `aborted` or `failed`), which Azure reports
/// for a blob made by Copy Blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CopyStatus(pub(super) String);

/// object_store's HTTP client, recording `x-ms-copy-status` in the extensions of each response,
/// which `get_opts` hands on (object_store itself ignores the header).
#[derive(Debug)]
struct CopyStatusConnector;

impl HttpConnector for CopyStatusConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(CopyStatusService(client)))
    }
}

#[derive(Debug)]
struct CopyStatusService(HttpClient);

#[async_trait::async_trait]
impl HttpService for CopyStatusService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let mut response = self.0.execute(request).await?;
        let status = response
            .headers()
            .get("x-ms-copy-status")
            .and_then(|value| value.to_str().ok())
            .map(|value| CopyStatus(value.to_owned()));
        if let Some(status) = status {
            response.extensions_mut().insert(status);
        }
        Ok(response)
    }
}

/// Lists (at most one level of) a container to learn whether it exists and the credential works.
pub(super) async fn list_container(store: &MicrosoftAzure) -> Result<(), StorageError> {
    let error = match store
        .list_with_delimiter(Some(&Path::from(STAGING_PREFIX)))
        .await
    {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    let text = error.to_string();
    // object_store reports every failed listing as a generic error; Azure's error code in the
    // message is the only way to tell a missing container from refused credentials.
    let refused = [
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "InvalidAuthenticationInfo",
        "403 Forbidden",
    ];
    if text.contains("ContainerNotFound") {
        Err(StorageError::ContainerNotFound)
    } else if refused.iter().any(|code| text.contains(code)) {
        Err(StorageError::Unauthorized(summarize(&error)))
    } else {
        Err(StorageError::Unavailable(summarize(&error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_and_account_urls_are_read() {
        let account = AzureAccount::from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=clinic;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(
            format!("{account:?}"),
            "Azure account clinic at https://clinic.blob.core.windows.net (account key)"
        );
        let emulator = AzureAccount::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert!(format!("{emulator:?}").contains("http://127.0.0.1:10000/devstoreaccount1"));
        assert!(AzureAccount::from_connection_string("AccountName=x").is_err());

        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds.json");
        let url = "https://clinic.blob.core.windows.net";
        let from_env = AzureAccount::from_account_url(url, &creds).unwrap();
        assert!(format!("{from_env:?}").ends_with("(environment)"));
        std::fs::write(
            &creds,
            r#"{"tenantId": "t", "clientId": "c", "clientSecret": "s3cret"}"#,
        )
        .unwrap();
        let principal = AzureAccount::from_account_url(url, &creds).unwrap();
        let shown = format!("{principal:?}");
        assert!(
            shown.ends_with("(service principal)") && !shown.contains("s3cret"),
            "{shown}"
        );
        std::fs::write(&creds, "{}").unwrap();
        assert!(AzureAccount::from_account_url(url, &creds).is_err());
        assert!(
            AzureAccount::from_account_url("http://clinic.blob.core.windows.net", &creds).is_err()
        );
    }
}
