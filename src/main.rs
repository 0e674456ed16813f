//! mpsi: hermetic, reproducible OCI images without Docker.

mod assemble;
mod build;
mod cli;
mod deb;
mod elf;
mod fetch;
mod fsutil;
mod http;
mod layer;
mod lock;
mod model;
mod oci;
mod progress;
mod rootfs;
mod sbom;
mod sink;
mod spec;
mod store;
mod unpack;

use clap::Parser;
use std::process::ExitCode;

const EXIT_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let json = cli.json;
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let bad_input = err.chain().any(|c| {
                c.is::<spec::SpecError>()
                    || c.is::<lock::LockError>()
                    || c.is::<fetch::MissingInput>()
                    || c.is::<build::PatchFailed>()
                    || c.is::<model::reference::BadReference>()
            });
            let causes: Vec<String> = err.chain().map(|c| c.to_string()).collect();
            if json {
                let v = serde_json::json!({ "error": causes.first(), "causes": &causes[1..] });
                println!("{v}");
            }
            eprintln!("error: {}", causes[0]);
            for c in &causes[1..] {
                eprintln!("  caused by: {c}");
            }
            ExitCode::from(if bad_input {
                EXIT_BAD_INPUT
            } else {
                EXIT_FAILED
            })
        }
    }
}
