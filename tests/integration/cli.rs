//! The `blobprox` binary as an operator uses it: keygen, credentials and serve.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{blobprox_command, free_port, isolated_command};

/// Runs `blobprox keygen -p keys` (with `--force` when asked) in `dir`.
fn keygen(dir: &Path, keys: &Path, force: bool) -> std::process::Output {
    let mut command = blobprox_command(dir);
    command.arg("keygen");
    if force {
        command.arg("--force");
    }
    command.arg("-p").arg(keys).output().unwrap()
}

/// A started `serve` process and the stdout lines it printed before listening.
struct Served {
    child: Child,
    banner: Vec<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `blobprox serve ARGS...` and waits until it listens.
fn serve(mut command: Command, args: &[&str]) -> Served {
    let mut child = command
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut served = Served {
        child,
        banner: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let listening = line.starts_with("listening on");
        served.banner.push(line);
        if listening || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        served
            .banner
            .last()
            .is_some_and(|l| l.starts_with("listening on")),
        "serve did not start: {:?}",
        served.banner
    );
    served
}

/// Starts `blobprox serve ARGS...` with all its output (banner and logs) written to `log`, and
/// waits until it listens.
fn serve_logging_to(mut command: Command, args: &[&str], log: &Path) -> Served {
    let file = std::fs::File::create(log).unwrap();
    let child = command
        .arg("serve")
        .args(args)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let served = Served {
        child,
        banner: Vec::new(),
    };
    eventually("serve listens", || {
        std::fs::read_to_string(log).is_ok_and(|text| text.contains("listening on"))
    });
    served
}

fn banner_value(banner: &[String], key: &str) -> String {
    banner
        .iter()
        .find_map(|line| line.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{key} not in {banner:?}"))
        .to_owned()
}

#[test]
fn keygen_writes_keys_once_and_is_safe_to_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let output = keygen(dir.path(), &keys, false);
    assert!(output.status.success());
    let private = std::fs::read(keys.join("rsa_private_key.pem")).unwrap();
    assert!(keys.join("rsa_public_key.pem").is_file() && keys.join("symmetric_key.key").is_file());

    let output = keygen(dir.path(), &keys, false);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("left unchanged"));
    assert_eq!(
        std::fs::read(keys.join("rsa_private_key.pem")).unwrap(),
        private
    );

    std::fs::remove_file(keys.join("symmetric_key.key")).unwrap();
    let output = keygen(dir.path(), &keys, false);
    assert!(!output.status.success());
    let output = keygen(dir.path(), &keys, true);
    assert!(output.status.success());
    assert_ne!(
        std::fs::read(keys.join("rsa_private_key.pem")).unwrap(),
        private
    );
}

#[test]
fn credentials_writes_both_files_and_prints_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let output = blobprox_command(dir.path())
        .args(["credentials", "-p", "creds"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path().join("creds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let json_name = names
        .iter()
        .find(|n| n.ends_with("_blobprox.json"))
        .unwrap();
    let key_name = names
        .iter()
        .find(|n| n.ends_with("_blobprox_encrypted.key"))
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("creds").join(json_name)).unwrap())
            .unwrap();
    let api_key = std::fs::read_to_string(dir.path().join("creds").join(key_name)).unwrap();
    for value in [&json["salt"], &json["decryption_key"], &json["key"]] {
        assert!(stdout.contains(value.as_str().unwrap()));
    }
    assert!(stdout.contains(&format!("API_KEY={api_key}")));
}

#[test]
fn development_start_makes_keys_and_credentials_and_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = blobprox_command(dir.path());
    command
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1");
    let served = serve(command, &[]);
    let banner = served.banner.join("\n");
    assert!(banner.contains(".blobprox/keys"), "{banner}");
    assert!(
        dir.path()
            .join(".blobprox/keys/rsa_private_key.pem")
            .is_file()
    );
    assert!(dir.path().join("data").is_dir());

    let client = reqwest::blocking::Client::new();
    let response = client
        .get(format!("http://127.0.0.1:{port}/key/public"))
        .header(
            "x-decryption-key",
            banner_value(&served.banner, "x-decryption-key"),
        )
        .header("x-salt", banner_value(&served.banner, "x-salt"))
        .header(
            "x-comparison-key",
            banner_value(&served.banner, "x-comparison-key"),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(served);

    // A second start reuses what the first made.
    let mut again = blobprox_command(dir.path());
    again.env("PORT", port.to_string()).env("HOST", "127.0.0.1");
    let served = serve(again, &[]);
    assert!(!served.banner.join("\n").contains("created new"));
}

#[test]
fn metrics_addr_moves_metrics_off_the_api_port() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let mut command = blobprox_command(dir.path());
    command
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"));
    let served = serve(command, &[]);
    assert!(
        served.banner.contains(&format!(
            "metrics on http://127.0.0.1:{metrics_port}/metrics"
        )),
        "{:?}",
        served.banner
    );
    let get = |port: u16, path: &str| {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}{path}")).unwrap()
    };
    let metrics = get(metrics_port, "/metrics");
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .unwrap()
            .contains("blobprox_requests_in_flight")
    );
    assert_eq!(get(port, "/metrics").status(), 404);
    assert_eq!(get(port, "/healthz").status(), 200);
    assert_eq!(get(metrics_port, "/healthz").status(), 404);
}

#[test]
fn bad_values_fail_with_one_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env, expected) in [
        (&["serve", "--port", "abc"][..], None, "--port"),
        (
            &["serve"][..],
            Some(("BLOB_FORMAT", "xml")),
            "possible values: stream, fernet",
        ),
        (
            &["serve"][..],
            Some(("STORAGE_URL", "ftp://host/x")),
            "STORAGE_URL must be",
        ),
    ] {
        let mut command = blobprox_command(dir.path());
        command.args(args);
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn production_start_without_keys_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = blobprox_command(dir.path())
        .args(["serve", "--port", "0"])
        .env("PROD", "true")
        .env("KEY_VAULT_PATH", dir.path().join("missing"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("blobprox keygen"), "{stderr}");

    let keys = dir.path().join("keys");
    keygen(dir.path(), &keys, false);
    let output = blobprox_command(dir.path())
        .args(["serve", "--port", "0"])
        .env("KEY_VAULT_PATH", &keys)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("API_KEY is not set")
    );
}

#[test]
fn environment_beats_dotenv_and_flags_beat_both() {
    let dir = tempfile::tempdir().unwrap();
    let (dotenv_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join(".env"),
        format!("PORT={dotenv_port}\nHOST=127.0.0.1\n"),
    )
    .unwrap();
    let flag = flag_port.to_string();
    let cases: [(Option<u16>, &[&str], u16); 3] = [
        (None, &[], dotenv_port),
        (Some(env_port), &[], env_port),
        (Some(env_port), &["--port", &flag], flag_port),
    ];
    for (env, flags, expected) in cases {
        let mut command = blobprox_command(dir.path());
        if let Some(port) = env {
            command.env("PORT", port.to_string());
        }
        let served = serve(command, flags);
        let listening = served.banner.last().unwrap();
        assert!(listening.ends_with(&format!(":{expected}")), "{listening}");
    }
}

/// A production-style start: keys and credentials made by the commands, JSON logs to a file.
struct Production {
    dir: tempfile::TempDir,
    port: u16,
    credentials: serde_json::Value,
    api_key: String,
}

impl Production {
    fn prepare() -> Self {
        let dir = tempfile::tempdir().unwrap();
        blobprox_command(dir.path())
            .args(["keygen", "-p", "keys"])
            .output()
            .unwrap();
        blobprox_command(dir.path())
            .args(["credentials", "-p", "creds"])
            .output()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("data/box")).unwrap();
        let find = |suffix: &str| {
            std::fs::read_dir(dir.path().join("creds"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().ends_with(suffix))
                .unwrap()
        };
        let credentials =
            serde_json::from_slice(&std::fs::read(find("_blobprox.json")).unwrap()).unwrap();
        let api_key = std::fs::read_to_string(find("_encrypted.key")).unwrap();
        Self {
            dir,
            port: free_port(),
            credentials,
            api_key,
        }
    }

    fn command(&self) -> Command {
        let mut command = blobprox_command(self.dir.path());
        command
            .env("PROD", "true")
            .env("API_KEY", &self.api_key)
            .env("KEY_VAULT_PATH", self.dir.path().join("keys"))
            .env(
                "STORAGE_URL",
                format!("file://{}", self.dir.path().join("data").display()),
            )
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string());
        command
    }

    fn header_lines(&self) -> String {
        format!(
            "x-decryption-key: {}\r\nx-salt: {}\r\nx-comparison-key: {}\r\n",
            self.credentials["decryption_key"].as_str().unwrap(),
            self.credentials["salt"].as_str().unwrap(),
            self.credentials["key"].as_str().unwrap()
        )
    }

    fn client_request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        reqwest::blocking::Client::new()
            .request(method, format!("http://127.0.0.1:{}{path}", self.port))
            .header(
                "x-decryption-key",
                self.credentials["decryption_key"].as_str().unwrap(),
            )
            .header("x-salt", self.credentials["salt"].as_str().unwrap())
            .header(
                "x-comparison-key",
                self.credentials["key"].as_str().unwrap(),
            )
    }

    /// Starts `serve` with logs at `level` going to files; returns once it answers.
    fn spawn_logged(&self, level: &str) -> Child {
        let mut command = self.command();
        command
            .env("RUST_LOG", level)
            .stderr(std::fs::File::create(self.dir.path().join("server.log")).unwrap());
        let child = command
            .args(["serve"])
            .stdout(std::fs::File::create(self.dir.path().join("stdout.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .client_request(reqwest::Method::GET, "/healthz")
            .send()
            .is_err()
        {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// Stops a server from [`Self::spawn_logged`] with SIGTERM; returns everything it logged.
    fn stop_and_read_logs(&self, mut child: Child) -> String {
        let _ = isolated_command("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap();
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap()
            + &std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap()
    }
}

/// The `fields` of every JSON log line whose `request_id` is `id`.
fn log_fields_of(logs: &str, id: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["request_id"] == id)
        .map(|line| {
            let mut fields = line["fields"].clone();
            fields["level"] = line["level"].clone();
            fields
        })
        .collect()
}

#[test]
fn downloads_log_as_complete_and_integrity_failures_as_warnings() {
    let production = Production::prepare();
    let child = production.spawn_logged("info");
    // Five 64 KiB segments; the open checks the last one, so a damaged second one shows mid-body.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let wrapped = production.upload("whole.bin", content.clone());
    let download = || production.download("whole.bin", &wrapped);
    let response = download();
    let complete_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.bytes().unwrap(), content);

    let path = production.dir.path().join("data/box/whole.bin");
    let mut stored = std::fs::read(&path).unwrap();
    stored[100_000] ^= 1;
    std::fs::write(&path, stored).unwrap();
    let response = download();
    assert_eq!(response.status(), 200);
    let damaged_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        response.bytes().is_err(),
        "a damaged blob must not end cleanly"
    );
    let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", production.port))
        .unwrap()
        .text()
        .unwrap();
    let logs = production.stop_and_read_logs(child);

    let complete = log_fields_of(&logs, &complete_id);
    assert_eq!(complete.len(), 1, "{complete:?}");
    assert_eq!(complete[0]["aborted"], false, "{complete:?}");
    assert_eq!(complete[0]["bytes_out"], 300_000, "{complete:?}");
    let damaged = log_fields_of(&logs, &damaged_id);
    let warning = damaged
        .iter()
        .find(|fields| fields["level"] == "WARN")
        .unwrap_or_else(|| panic!("no warning for the damaged download: {damaged:?}"));
    assert_eq!(warning["format"], "stream", "{warning}");
    assert!(
        damaged.iter().any(|fields| fields["aborted"] == true),
        "{damaged:?}"
    );
    assert!(
        metrics.contains("blobprox_integrity_failures_total{format=\"stream\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("blobprox_aborted_responses_total 1"),
        "{metrics}"
    );
}

#[test]
fn sigterm_turns_readyz_draining_lets_a_slow_upload_finish_then_exits_zero() {
    use std::io::{Read, Write};
    let production = Production::prepare();
    let mut served = serve(production.command(), &[]);
    let public_key = production.public_key();
    let recipients = serde_json::json!({ "me": public_key }).to_string();
    let head = format!(
        "--B\r\nContent-Disposition: form-data; name=\"public-keys\"\r\n\r\n{recipients}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n"
    );
    let tail = "\r\n--B--\r\n";
    let file = vec![b'x'; 3 << 20];
    let request = format!(
        "POST /upload/box/slow.bin HTTP/1.1\r\nHost: x\r\n{}Content-Type: multipart/form-data; \
         boundary=B\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        production.header_lines(),
        head.len() + file.len() + tail.len()
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", production.port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(&file[..1 << 20]).unwrap();
    // The upload must be under way (its head read) before the signal: a connection whose
    // request has not been read yet is idle, and shutdown closes idle connections.
    eventually("the upload is in flight", || {
        reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", production.port))
            .and_then(|r| r.text())
            .is_ok_and(|text| text.contains("blobprox_requests_in_flight 2"))
    });
    signal(&served, "-TERM");
    // While the upload is in flight, the proxy still answers, and tells balancers to go away.
    let readyz = format!("http://127.0.0.1:{}/readyz", production.port);
    let draining = (0..100).find_map(|_| {
        let response = reqwest::blocking::get(&readyz).unwrap();
        if response.status() == 503 {
            return Some(response.json::<serde_json::Value>().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
        None
    });
    assert_eq!(
        draining.expect("/readyz stayed ready")["status"],
        "draining"
    );
    // The rest arrives slowly, after the signal.
    for chunk in file[1 << 20..].chunks(256 << 10) {
        std::thread::sleep(Duration::from_millis(100));
        stream.write_all(chunk).unwrap();
    }
    stream.write_all(tail.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let exit = served.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    // No new connection is accepted after shutdown.
    assert!(std::net::TcpStream::connect(("127.0.0.1", production.port)).is_err());
}

#[test]
fn logs_never_contain_secrets() {
    let production = Production::prepare();
    let child = production.spawn_logged("trace");
    let wrapped = production.upload("patient.txt", b"confidential content".to_vec());
    production
        .client_request(reqwest::Method::GET, "/download/box/patient.txt")
        .header("x-blob-key", &wrapped)
        .send()
        .unwrap()
        .text()
        .unwrap();
    production
        .client_request(reqwest::Method::GET, "/download/box/patient.txt")
        .form(&[("decryption-key", &wrapped)])
        .send()
        .unwrap()
        .text()
        .unwrap();
    reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}/key/public", production.port))
        .header("x-decryption-key", "wrong-but-secret-value")
        .send()
        .unwrap();
    let logs = production.stop_and_read_logs(child);
    assert!(
        logs.contains("\"route\":\"/download/{container}/{*blob}\""),
        "JSON request lines: {logs}"
    );
    let private_pem =
        std::fs::read_to_string(production.dir.path().join("keys/rsa_private_key.pem")).unwrap();
    let private_line = private_pem.lines().nth(5).unwrap().to_owned();
    let symmetric =
        std::fs::read_to_string(production.dir.path().join("keys/symmetric_key.key")).unwrap();
    let secrets = [
        production.credentials["decryption_key"].as_str().unwrap(),
        production.credentials["salt"].as_str().unwrap(),
        production.credentials["key"].as_str().unwrap(),
        production.api_key.trim(),
        &wrapped[..40],
        private_line.as_str(),
        symmetric.trim(),
        "wrong-but-secret-value",
        "patient.txt",
        "confidential content",
    ];
    for secret in secrets {
        assert!(!logs.contains(secret), "the logs contain {secret:?}");
    }
}

/// Sends `signal` (such as `-HUP`) to a served process.
fn signal(served: &Served, signal: &str) {
    let status = isolated_command("kill")
        .args([signal, &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to 10 s for `condition`, which a reload makes true.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Production {
    /// A start that reads its API keys from `api_key.txt` (API_KEY_FILE) and logs to `server.log`.
    fn with_api_key_file(&self) -> Command {
        let file = self.dir.path().join("api_key.txt");
        std::fs::write(&file, &self.api_key).unwrap();
        let mut command = self.command();
        command.env_remove("API_KEY").env("API_KEY_FILE", file);
        command
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn log_file(&self) -> std::path::PathBuf {
        self.dir.path().join("server.log")
    }

    fn public_key(&self) -> String {
        self.client_request(reqwest::Method::GET, "/key/public")
            .send()
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap()["public_key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Uploads `content` for this proxy and answers its wrapped key.
    fn upload(&self, name: &str, content: Vec<u8>) -> String {
        let form = reqwest::blocking::multipart::Form::new()
            .text(
                "public-keys",
                serde_json::json!({ "me": self.public_key() }).to_string(),
            )
            .part(
                "file",
                reqwest::blocking::multipart::Part::bytes(content).file_name("f"),
            );
        let answer: serde_json::Value = self
            .client_request(reqwest::Method::POST, &format!("/upload/box/{name}"))
            .multipart(form)
            .send()
            .unwrap()
            .json()
            .unwrap();
        answer["keys"]["me"].as_str().unwrap().to_owned()
    }

    fn download(&self, name: &str, wrapped: &str) -> reqwest::blocking::Response {
        self.client_request(reqwest::Method::GET, &format!("/download/box/{name}"))
            .header("x-blob-key", wrapped)
            .send()
            .unwrap()
    }
}

#[test]
fn sighup_reloads_rotated_keys_without_disturbing_a_download_in_flight() {
    use std::io::Read;
    let production = Production::prepare();
    let served = serve_logging_to(production.with_api_key_file(), &[], &production.log_file());
    let content: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    let before = production.upload("before.bin", content.clone());
    let old_public = production.public_key();
    let mut in_flight = production.download("before.bin", &before);
    let mut first = vec![0u8; 64 << 10];
    in_flight.read_exact(&mut first).unwrap();

    let rotated = blobprox_command(production.dir.path())
        .args(["keygen", "-p", "keys", "--rotate"])
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    signal(&served, "-HUP");
    eventually("the new key is served", || {
        production.public_key() != old_public
    });

    let mut rest = Vec::new();
    in_flight.read_to_end(&mut rest).unwrap();
    assert_eq!(
        [first, rest].concat(),
        content,
        "the download in flight is whole"
    );
    assert_eq!(
        production.download("before.bin", &before).bytes().unwrap(),
        content
    );
    let after = production.upload("after.bin", b"new".to_vec());
    assert_eq!(
        production.download("after.bin", &after).bytes().unwrap(),
        &b"new"[..]
    );

    let listing = blobprox_command(production.dir.path())
        .args(["keys", "-p", "keys"])
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.starts_with("current "))
            .count(),
        1,
        "{listing}"
    );
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.starts_with("retired "))
            .count(),
        1,
        "{listing}"
    );

    // Removing the retired key, then reloading, refuses what only it could open.
    std::fs::remove_dir_all(production.dir.path().join("keys/retired")).unwrap();
    signal(&served, "-HUP");
    eventually("the retired key is gone", || {
        production.download("before.bin", &before).status() == 400
    });
    assert!(production.logs().contains("reloaded the key directory"));
}

#[test]
fn a_failed_reload_keeps_the_keys_in_use_and_says_why() {
    let production = Production::prepare();
    let served = serve_logging_to(production.with_api_key_file(), &[], &production.log_file());
    let wrapped = production.upload("kept.bin", b"kept".to_vec());
    let public = production.public_key();
    std::fs::write(
        production.dir.path().join("keys/rsa_private_key.pem"),
        "broken",
    )
    .unwrap();
    std::fs::write(production.dir.path().join("api_key.txt"), "not-a-token").unwrap();
    signal(&served, "-HUP");
    eventually("both failures are logged", || {
        let logs = production.logs();
        logs.contains("key reload failed") && logs.contains("API key reload failed")
    });
    assert_eq!(production.public_key(), public);
    assert_eq!(
        production.download("kept.bin", &wrapped).bytes().unwrap(),
        &b"kept"[..]
    );
}

#[test]
fn api_keys_roll_over_by_file_and_sighup() {
    let production = Production::prepare();
    let served = serve_logging_to(production.with_api_key_file(), &[], &production.log_file());
    let new = blobprox_command(production.dir.path())
        .args(["credentials", "-p", "new-creds"])
        .output()
        .unwrap();
    assert!(new.status.success());
    let find = |suffix: &str| {
        std::fs::read_dir(production.dir.path().join("new-creds"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap()
    };
    let new_api_key = std::fs::read_to_string(find("_encrypted.key")).unwrap();
    let new_client: serde_json::Value =
        serde_json::from_slice(&std::fs::read(find("_blobprox.json")).unwrap()).unwrap();
    let status_with = |client: &serde_json::Value| {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}/key/public", production.port))
            .header(
                "x-decryption-key",
                client["decryption_key"].as_str().unwrap(),
            )
            .header("x-salt", client["salt"].as_str().unwrap())
            .header("x-comparison-key", client["key"].as_str().unwrap())
            .send()
            .unwrap()
            .status()
    };
    let old_client = production.credentials.clone();
    assert_eq!(status_with(&old_client), 200);
    assert_eq!(status_with(&new_client), 401);

    let file = production.dir.path().join("api_key.txt");
    std::fs::write(
        &file,
        format!("{},{}", production.api_key.trim(), new_api_key.trim()),
    )
    .unwrap();
    signal(&served, "-HUP");
    eventually("the new key is accepted", || {
        status_with(&new_client) == 200
    });
    assert_eq!(status_with(&old_client), 200);

    std::fs::write(&file, &new_api_key).unwrap();
    signal(&served, "-HUP");
    // The old credentials were cached, and are refused all the same once their key is removed.
    eventually("the old key is refused", || status_with(&old_client) == 401);
    assert_eq!(status_with(&new_client), 200);
}

#[test]
fn risky_settings_are_warned_about_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let production = Production::prepare();
    let private_key = production.dir.path().join("keys/rsa_private_key.pem");
    std::fs::set_permissions(&private_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = production.command();
    command.env_remove("API_KEY");
    let api_key = production.api_key.trim().to_owned();
    let _served = serve_logging_to(
        command,
        &["--api-key", &api_key, "--static-data-key"],
        &production.log_file(),
    );
    let logs = production.logs();
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN")).collect();
    let has = |text: &str| warnings.iter().any(|line| line.contains(text));
    assert!(
        has("rsa_private_key.pem is readable by group or others"),
        "{logs}"
    );
    assert!(has("--api-key on the command line"), "{logs}");
    assert!(has("STATIC_DATA_KEY is on"), "{logs}");
    assert!(!logs.contains(&api_key));
    // Through the environment, the key is not on the command line: no warning.
    drop(_served);
    let _served = serve_logging_to(production.command(), &[], &production.log_file());
    assert!(!production.logs().contains("--api-key on the command line"));
}
