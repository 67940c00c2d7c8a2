//! `chat-client [ADDR]`: chat with any stage. See the crate docs (`src/lib.rs`) for what it
//! shows and `src/script.rs` for script mode.
//!
//! ```sh
//! cargo run -p chat-client                                # interactive, 127.0.0.1:7878
//! cargo run -p chat-client -- --script lines.txt 127.0.0.1:7878
//! ```

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufReader, IsTerminal as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chat_client::display::{note, use_colour_on_stdout};
use chat_client::{net, script, terminal, Ending};
use clap::Parser;

/// A terminal client for the c10k-chat stages.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The server's address.
    #[arg(default_value = chat_core::DEFAULT_ADDR)]
    addr: String,

    /// Send the lines of FILE (`-` for standard input) and print what comes back, instead
    /// of chatting interactively. This is also the mode when standard input or output is
    /// not a terminal.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,

    /// Script mode: after the input ends (without `/quit`), end the session once nothing
    /// has arrived for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = seconds)]
    quiet: f64,
}

/// A non-negative number of seconds.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let interactive =
        args.script.is_none() && io::stdin().is_terminal() && io::stdout().is_terminal();
    let stream = match net::connect(&args.addr) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("{}", note(&e.to_string(), false));
            return ExitCode::from(Ending::Failed.exit_code());
        }
    };
    let ending = if interactive {
        match terminal::run(&stream) {
            Ok(ending) => ending,
            // rustyline cannot drive this terminal (TERM=dumb, say): script mode still works.
            Err(terminal::Unsupported(_)) => {
                let term = std::env::var("TERM").unwrap_or_default();
                eprintln!(
                    "{}",
                    note(
                        &format!("no line editing on this terminal (TERM={term}): lines are sent as typed"),
                        false
                    )
                );
                run_script(stream, &args)
            }
        }
    } else {
        run_script(stream, &args)
    };
    ExitCode::from(ending.exit_code())
}

/// Script mode, from `--script FILE` or standard input.
fn run_script(stream: TcpStream, args: &Args) -> Ending {
    let options = script::Options {
        quiet: Duration::from_secs_f64(args.quiet),
        colour: use_colour_on_stdout(),
    };
    let input: Box<dyn io::BufRead + Send> = match &args.script {
        Some(path) if path.as_os_str() != "-" => match File::open(path) {
            Ok(file) => Box::new(BufReader::new(file)),
            Err(e) => {
                eprintln!(
                    "{}",
                    note(&format!("cannot read {}: {e}", path.display()), false)
                );
                return Ending::Failed;
            }
        },
        _ => Box::new(BufReader::new(io::stdin())),
    };
    script::run(stream, input, io::stdout(), io::stderr(), &options).ending
}
