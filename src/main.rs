//! The `blobprox` command: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The real environment wins over `.env`, and flags win over both.
    let _ = dotenvy::dotenv();
    blobprox::cli::run(blobprox::cli::Cli::parse())
}
