//! The `blobprox` binary as an operator uses it: keygen, credentials and serve.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_blobprox");

fn blobprox(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(dir);
    for variable in [
        "API_KEY",
        "STORAGE_URL",
        "KEY_VAULT_PATH",
        "PROD",
        "PORT",
        "HOST",
    ] {
        command.env_remove(variable);
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let output = blobprox(dir.path())
        .args(["keygen", "-p"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(output.status.success());
    let private = std::fs::read(keys.join("rsa_private_key.pem")).unwrap();
    assert!(keys.join("rsa_public_key.pem").is_file() && keys.join("symmetric_key.key").is_file());

    let output = blobprox(dir.path())
        .args(["keygen", "-p"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("left unchanged"));
    assert_eq!(
        std::fs::read(keys.join("rsa_private_key.pem")).unwrap(),
        private
    );

    std::fs::remove_file(keys.join("symmetric_key.key")).unwrap();
    let output = blobprox(dir.path())
        .args(["keygen", "-p"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let output = blobprox(dir.path())
        .args(["keygen", "--force", "-p"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_ne!(
        std::fs::read(keys.join("rsa_private_key.pem")).unwrap(),
        private
    );
}

#[test]
fn credentials_writes_both_files_and_prints_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let output = blobprox(dir.path())
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
    let mut command = blobprox(dir.path());
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
    let mut again = blobprox(dir.path());
    again.env("PORT", port.to_string()).env("HOST", "127.0.0.1");
    let served = serve(again, &[]);
    assert!(!served.banner.join("\n").contains("created new"));
}

#[test]
fn production_start_without_keys_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = blobprox(dir.path())
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
    blobprox(dir.path())
        .args(["keygen", "-p"])
        .arg(&keys)
        .output()
        .unwrap();
    let output = blobprox(dir.path())
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
    let served = serve(blobprox(dir.path()), &[]);
    assert!(
        served
            .banner
            .last()
            .unwrap()
            .ends_with(&format!(":{dotenv_port}"))
    );
    drop(served);

    let mut command = blobprox(dir.path());
    command.env("PORT", env_port.to_string());
    let served = serve(command, &[]);
    assert!(
        served
            .banner
            .last()
            .unwrap()
            .ends_with(&format!(":{env_port}"))
    );
    drop(served);

    let mut command = blobprox(dir.path());
    command.env("PORT", env_port.to_string());
    let served = serve(command, &["--port", &flag_port.to_string()]);
    assert!(
        served
            .banner
            .last()
            .unwrap()
            .ends_with(&format!(":{flag_port}"))
    );
}
