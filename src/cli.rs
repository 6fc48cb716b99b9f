//! The command line: `serve`, `keygen` and `credentials`, with flags, environment and `.env`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigError, ServeArgs};
use crate::credentials;
use crate::crypto::CryptoError;
use crate::keys::{self, KeyError, KeygenOutcome};
use crate::server::{self, ServerError};

/// blobprox: an HTTP proxy that encrypts files on their way into Azure Blob Storage.
#[derive(Debug, Parser)]
#[command(name = "blobprox", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(Box<ServeArgs>),
    /// Write the proxy's key files (RSA-2048 pair and static key) into a directory.
    Keygen(KeygenArgs),
    /// Write a new set of API credentials and print the values clients and the proxy need.
    Credentials(CredentialsArgs),
    /// List the key pairs of a key directory (current and retired) with fingerprints and ages.
    Keys(KeysArgs),
}

/// Options of `blobprox keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write rsa_private_key.pem, rsa_public_key.pem and symmetric_key.key into.
    #[arg(short = 'p', long = "path", env = "KEY_VAULT_PATH")]
    pub path: PathBuf,
    /// Replace existing key files (anything encrypted for the old key pair becomes unreadable).
    #[arg(long, conflicts_with = "rotate")]
    pub force: bool,
    /// Keep the current keys as retired (under DIR/retired/UTC-TIME/, still unwrapping what
    /// was wrapped for them) and write new ones.
    #[arg(long)]
    pub rotate: bool,
}

/// Options of `blobprox keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The key directory.
    #[arg(short = 'p', long = "path", env = "KEY_VAULT_PATH")]
    pub path: PathBuf,
}

/// Options of `blobprox credentials`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// Directory to write <ts>_blobprox.json and <ts>_blobprox_encrypted.key into.
    #[arg(short = 'p', long = "path")]
    pub path: PathBuf,
}

/// Parses the process's command line (with the environment), noting where secrets came from.
pub fn parse() -> Result<Cli, clap::Error> {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut Cli::command()))?;
    if let (Command::Serve(args), Some(("serve", serve))) = (&mut cli.command, matches.subcommand())
    {
        args.api_key_on_command_line =
            serve.value_source("api_key") == Some(ValueSource::CommandLine);
    }
    Ok(cli)
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The `serve` options cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The proxy could not start or stopped on an error.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Key files could not be written, read or listed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// New credentials could not be made.
    #[error(transparent)]
    Credentials(#[from] CryptoError),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => Ok(server::serve(config::resolve(&args)?)?),
        Command::Keygen(args) => keygen(&args),
        Command::Credentials(args) => make_credentials(&args),
        Command::Keys(args) => list_keys(&args),
    }
}

/// Reports a command-line error on one line (help and version are printed as usual).
pub fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    let rendered = error.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .map(|line| line.trim_start_matches("error: "))
        .collect();
    eprintln!(
        "blobprox: error: {} (see blobprox --help)",
        message.join(" ")
    );
    ExitCode::from(2)
}

fn keygen(args: &KeygenArgs) -> Result<(), CliError> {
    if args.rotate {
        match keys::rotate_key_files(&args.path)? {
            Some(retired) => println!(
                "retired the previous keys to {} and wrote new keys to {}; send SIGHUP to \
                 running proxies (or restart them) to use them",
                retired.display(),
                args.path.display()
            ),
            None => println!(
                "no keys to retire; wrote new keys to {}",
                args.path.display()
            ),
        }
        return Ok(());
    }
    match keys::generate_key_files(&args.path, args.force)? {
        KeygenOutcome::Created => println!("wrote new keys to {}", args.path.display()),
        KeygenOutcome::KeptExisting => println!(
            "keys already present in {}; left unchanged (use --force to replace them)",
            args.path.display()
        ),
    }
    Ok(())
}

fn list_keys(args: &KeysArgs) -> Result<(), CliError> {
    let listing = keys::list_keys(&args.path)?;
    let now = std::time::SystemTime::now();
    println!("ROLE     FINGERPRINT       SINCE                 AGE  FILE");
    for key in listing {
        let since = chrono::DateTime::<chrono::Utc>::from(key.since);
        let days = now.duration_since(key.since).unwrap_or_default().as_secs() / 86_400;
        println!(
            "{:<8} {}  {}  {:>3}d  {}",
            key.role.as_str(),
            key.fingerprint,
            since.format("%Y-%m-%dT%H:%M:%SZ"),
            days,
            key.path.display()
        );
    }
    Ok(())
}

fn make_credentials(args: &CredentialsArgs) -> Result<(), CliError> {
    let (client, api_key) = credentials::generate()?;
    let files = credentials::write_files(&args.path, &client, &api_key)?;
    println!(
        "wrote {} and {}",
        files.client.display(),
        files.api_key.display()
    );
    println!("{}", config::credentials_banner(&client, &api_key));
    Ok(())
}
