//! A real blobprox router on an ephemeral port, with keys, credentials and a container, and a
//! client that speaks to it as the Python clients do.

pub mod azurite;

use std::ffi::OsStr;
use std::process::Command;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use blobprox::credentials::{self, ClientCredentials};
use blobprox::http::{self, AppState, ConnectionLimits, Limits, UploadPolicy};
use blobprox::keys::{self, ProxyKeys};
use blobprox::storage::{Backend, Storage};
use blobprox::transfer::BlobFormat;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, RequestBuilder, Response};
use tempfile::TempDir;

/// The container of a test server on the local backend.
pub const CONTAINER: &str = "test";

/// Key files and credentials shared by every server of a test binary (RSA generation is slow).
pub struct Secrets {
    pub key_dir: TempDir,
    pub client: ClientCredentials,
    pub api_key: String,
}

pub static SECRETS: LazyLock<Secrets> = LazyLock::new(|| {
    let key_dir = tempfile::tempdir().unwrap();
    keys::generate_key_files(key_dir.path(), false).unwrap();
    let (client, api_key) = credentials::generate().unwrap();
    Secrets {
        key_dir,
        client,
        api_key,
    }
});

/// Options of a test server.
#[derive(Default, Clone)]
pub struct Options {
    pub limits: Limits,
    pub upload_policy: UploadPolicy,
    pub connection: ConnectionLimits,
    /// A key directory of the server's own instead of the shared one.
    pub key_dir: Option<std::path::PathBuf>,
    /// A buffer budget (`MAX_BUFFER_BYTES`) other than the default.
    pub max_buffer_bytes: Option<usize>,
}

/// Environment variable that switches the suite from the local backend to Azure (Azurite).
pub const AZURE_ENV: &str = "BLOBPROX_TEST_AZURE_CONNECTION_STRING";

/// A running server with its own container, on the local backend or, when [`AZURE_ENV`] is set,
/// on Azure.
pub struct TestServer {
    pub url: String,
    pub container: String,
    pub http: Client,
    /// The keys the server holds; [`TestServer::reload_keys`] replaces them as SIGHUP does.
    pub keys: Arc<arc_swap::ArcSwap<ProxyKeys>>,
    /// Direct access to the container, bypassing the proxy (to inspect or damage blobs).
    raw: Arc<dyn ObjectStore>,
    backend: Backend,
    data_directory: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_format(format: BlobFormat) -> Self {
        Self::start_with(Options {
            upload_policy: UploadPolicy {
                format,
                ..UploadPolicy::default()
            },
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(options: Options) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let (backend, container, raw) = match std::env::var(AZURE_ENV) {
            Ok(connection_string) => azurite::new_container(&connection_string).await,
            Err(_) => {
                std::fs::create_dir(data_dir.path().join(CONTAINER)).unwrap();
                let raw =
                    LocalFileSystem::new_with_prefix(data_dir.path().join(CONTAINER)).unwrap();
                let backend = Backend::Local(data_dir.path().to_owned());
                (
                    backend,
                    CONTAINER.to_owned(),
                    Arc::new(raw) as Arc<dyn ObjectStore>,
                )
            }
        };
        Self::serve(backend, container, raw, data_dir, options).await
    }

    /// Another server on the same storage and container, with its own options (and keys).
    pub async fn start_beside(&self, options: Options) -> Self {
        let unused = tempfile::tempdir().unwrap();
        Self::serve(
            self.backend.clone(),
            self.container.clone(),
            self.raw.clone(),
            unused,
            options,
        )
        .await
    }

    async fn serve(
        backend: Backend,
        container: String,
        raw: Arc<dyn ObjectStore>,
        data_directory: TempDir,
        options: Options,
    ) -> Self {
        let mut storage = Storage::open(backend.clone()).unwrap();
        if let Some(bytes) = options.max_buffer_bytes {
            storage = storage.with_max_buffer_bytes(bytes);
        }
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let (url, keys) = spawn_server(storage, options, stopped).await;
        Self {
            url,
            container,
            http: Client::new(),
            keys,
            raw,
            backend,
            data_directory,
            shutdown: Some(shutdown),
        }
    }

    /// The server's `host:port`.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// A new TCP connection to the server, for requests written byte by byte.
    pub async fn connect(&self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(self.address())
            .await
            .unwrap()
    }

    /// Reads `dir` again into the running server, as a SIGHUP does.
    pub fn reload_keys(&self, dir: &std::path::Path) {
        self.keys
            .store(Arc::new(keys::load_key_files(dir).unwrap()));
    }

    /// The local data directory (unused on Azure).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_directory.path()
    }

    pub fn upload_path(&self, name: &str) -> String {
        format!("/upload/{}/{name}", self.container)
    }

    pub fn download_path(&self, name: &str) -> String {
        format!("/download/{}/{name}", self.container)
    }

    /// The stored bytes of blob `name`, read past the proxy.
    pub async fn raw_read(&self, name: &str) -> Vec<u8> {
        let path = Path::parse(name).unwrap();
        self.raw
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    /// Replaces the stored bytes of blob `name`, past the proxy.
    pub async fn raw_write(&self, name: &str, bytes: &[u8]) {
        let path = Path::parse(name).unwrap();
        self.raw.put(&path, bytes.to_vec().into()).await.unwrap();
    }

    /// Every name stored in the container, the staging area included.
    pub async fn raw_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .raw
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }

    /// An unauthenticated `GET path`.
    pub async fn get_anonymous(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    /// The body of an unauthenticated `GET path`.
    pub async fn get_text(&self, path: &str) -> String {
        self.get_anonymous(path).await.text().await.unwrap()
    }

    /// A request with valid credentials.
    pub fn authed(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        with_credentials(self.http.request(method, format!("{}{path}", self.url)))
    }

    /// The proxy's public key PEM, from the API.
    pub async fn public_key(&self) -> String {
        public_key_at(&self.url).await
    }

    /// Posts `form` as the upload of blob `name`, with valid credentials.
    pub async fn upload_form(&self, name: &str, form: Form) -> Response {
        self.authed(reqwest::Method::POST, &self.upload_path(name))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Uploads `content` as blob `name` for one recipient ("me", this proxy).
    pub async fn upload(&self, name: &str, content: &[u8], overwrite: Option<&str>) -> Response {
        let recipients = serde_json::json!({ "me": self.public_key().await }).to_string();
        let mut form = Form::new().text("public-keys", recipients);
        if let Some(overwrite) = overwrite {
            form = form.text("overwrite", overwrite.to_owned());
        }
        form = form.part(
            "file",
            Part::bytes(content.to_vec()).file_name("upload.bin"),
        );
        self.upload_form(name, form).await
    }

    /// Uploads and returns this proxy's wrapped key, asserting success.
    pub async fn upload_ok(&self, name: &str, content: &[u8]) -> String {
        let response = self.upload(name, content, Some("true")).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        let body: serde_json::Value = response.json().await.unwrap();
        body["decryption_keys"]["me"].as_str().unwrap().to_owned()
    }

    /// Asks for blob `name`'s key, opened with `wrapped`, to be wrapped for `recipients` (a JSON
    /// object of id → PEM), with the wrapped key in the `x-blob-key` header.
    pub async fn share(
        &self,
        name: &str,
        wrapped: &str,
        recipients: &serde_json::Value,
    ) -> Response {
        let form = Form::new().text("public-keys", recipients.to_string());
        self.authed(
            reqwest::Method::POST,
            &format!("/share/{}/{name}", self.container),
        )
        .header("x-blob-key", wrapped)
        .multipart(form)
        .send()
        .await
        .unwrap()
    }

    /// `method` (GET or HEAD) on blob `name` with the wrapped key in the `x-blob-key` header.
    pub async fn download_by_header(
        &self,
        method: reqwest::Method,
        name: &str,
        wrapped: &str,
    ) -> Response {
        self.authed(method, &self.download_path(name))
            .header("x-blob-key", wrapped)
            .send()
            .await
            .unwrap()
    }

    /// Downloads blob `name` with the wrapped key in the `decryption-key` form field.
    pub async fn download(&self, name: &str, wrapped: &str) -> Response {
        self.authed(reqwest::Method::GET, &self.download_path(name))
            .form(&[("decryption-key", wrapped)])
            .send()
            .await
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Serves a router over `storage` with the shared credentials (and the shared keys unless the
/// options name a key directory) on an ephemeral port until `stopped` completes; returns its URL
/// and its keys.
async fn spawn_server(
    storage: Storage,
    options: Options,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> (String, Arc<arc_swap::ArcSwap<ProxyKeys>>) {
    let keys = match &options.key_dir {
        Some(dir) => keys::load_key_files(dir).unwrap(),
        None => load_keys(),
    };
    let state = AppState::new(
        keys,
        storage,
        SECRETS.api_key.parse().unwrap(),
        options.limits,
        options.upload_policy,
    );
    let keys = state.keys.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(http::serve(
        listener,
        http::router(state),
        async {
            stopped.await;
            tokio::time::Instant::now() + Duration::from_secs(1)
        },
        options.connection,
    ));
    (url, keys)
}

/// Serves a router over `storage` for the rest of the test; returns its URL.
pub async fn serve_storage(storage: Storage) -> String {
    spawn_server(storage, Options::default(), std::future::pending())
        .await
        .0
}

/// The public key PEM of the proxy at `url`.
pub async fn public_key_at(url: &str) -> String {
    let response = with_credentials(Client::new().get(format!("{url}/key/public")))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    body["public_key"].as_str().unwrap().to_owned()
}

/// The shared key files, loaded.
pub fn load_keys() -> ProxyKeys {
    keys::load_key_files(SECRETS.key_dir.path()).unwrap()
}

/// Adds the three credential headers.
pub fn with_credentials(request: RequestBuilder) -> RequestBuilder {
    request
        .header("x-decryption-key", &SECRETS.client.decryption_key)
        .header("x-salt", &SECRETS.client.salt)
        .header("x-comparison-key", &SECRETS.client.key)
}

/// The JSON body of a response, which must have the given status.
pub async fn json_with_status(response: Response, status: u16) -> serde_json::Value {
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// The `detail` of an error response, which must have the given status.
pub async fn detail(response: Response, status: u16) -> String {
    let body = json_with_status(response, status).await;
    body["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body["detail"].to_string())
}

/// The three credential headers as lines of a raw HTTP/1.1 request, each ending in CRLF.
pub fn credential_lines() -> String {
    format!(
        "x-decryption-key: {}\r\nx-salt: {}\r\nx-comparison-key: {}\r\n",
        SECRETS.client.decryption_key, SECRETS.client.salt, SECRETS.client.key
    )
}

/// Sends a request line exactly as given (no client-side path normalisation), with credentials
/// and no body; returns the status and body text.
pub async fn raw_request(url: &str, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{}Content-Length: 0\r\n\
         Connection: close\r\n\r\n",
        credential_lines()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A loopback port free at the time of asking, for a child process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `program` with an allow-listed environment: PATH and HOME from the test's own and nothing
/// else, so that what the caller's shell exports (API_KEY, STORAGE_URL, RUST_LOG, proxies) cannot
/// change a test; the test adds what it means with `.env`.
pub fn isolated_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
}

/// The `blobprox` binary with an allow-listed environment ([`isolated_command`]), run in `dir`:
/// the binary loads a `.env` from its working directory or the nearest parent that has one
/// (dotenvy), so `dir` is a test's own temp dir and no parent of it may hold a stray `.env`.
pub fn blobprox_command(dir: &std::path::Path) -> Command {
    if let Some(stray) = dir
        .ancestors()
        .skip(1)
        .map(|parent| parent.join(".env"))
        .find(|file| file.exists())
    {
        panic!(
            "{} would be loaded by every blobprox the tests start",
            stray.display()
        );
    }
    let mut command = isolated_command(env!("CARGO_BIN_EXE_blobprox"));
    command.current_dir(dir);
    command
}

/// The `blobprox` binary serving a local data directory with the shared keys and credentials,
/// for tests that watch the process itself (its memory, its signals).
pub struct BinaryServer {
    pub url: String,
    pub child: std::process::Child,
    pub data_dir: Arc<TempDir>,
}

impl BinaryServer {
    /// Starts `blobprox serve` with container [`CONTAINER`] and the extra `env`; returns once
    /// it answers.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(data_dir.path().join(CONTAINER)).unwrap();
        Self::start_on(Arc::new(data_dir), env).await
    }

    /// Starts `blobprox serve` on an existing data directory (as a restart would).
    pub async fn start_on(data_dir: Arc<TempDir>, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = blobprox_command(data_dir.path())
            .arg("serve")
            .env("PROD", "true")
            .env("API_KEY", &SECRETS.api_key)
            .env("KEY_VAULT_PATH", SECRETS.key_dir.path())
            .env(
                "STORAGE_URL",
                format!("file://{}", data_dir.path().display()),
            )
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if reqwest::get(format!("{url}/healthz")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            url,
            child,
            data_dir,
        }
    }

    /// A `/proc/PID/status` figure of the process in KiB, such as `VmHWM` (peak resident set).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
