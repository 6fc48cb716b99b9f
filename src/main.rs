//! The `blobprox` command: parses the command line and hands it to the library.

use std::process::ExitCode;

// The system allocator returns large freed buffers to the kernel and faults them in again on the
// next transfer; keeping them measurably speeds up multi-gigabyte uploads (see bench/).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The real environment wins over `.env`, and flags win over both.
    let _ = dotenvy::dotenv();
    match blobprox::cli::parse() {
        Ok(cli) => match blobprox::cli::run(cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("blobprox: error: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => blobprox::cli::usage_error(error),
    }
}
