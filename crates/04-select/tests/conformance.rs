//! The conformance suite, run against the real `chat-select` binary over loopback TCP:
//! `cargo test -p chat-select --test conformance`. Beside `--max-clients` it has a hard limit
//! of its own, `chat_select::SELECT_MAX_CLIENTS` (1000, below `FD_SETSIZE`): the connect burst
//! expects that many welcomed and the rest refused with `! server full`.

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-select"),
    mode = concurrent,
    max_clients = chat_select::SELECT_MAX_CLIENTS,
);
