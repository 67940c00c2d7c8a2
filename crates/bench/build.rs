//! Records which rustc built the generator, for the conditions of every result.
//! (The stages are built by the same `cargo build --release --workspace`.)

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CHAT_BENCH_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
