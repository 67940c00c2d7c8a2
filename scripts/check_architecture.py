#!/usr/bin/env python3
"""Checks the architecture's invariants that the compiler does not (see ARCHITECTURE.md).

    scripts/check_architecture.py              # check the workspace; exit 1 on any violation
    scripts/check_architecture.py --self-test  # prove each rule fails on a deliberate violation

Rules, each named in ARCHITECTURE.md's "Invariants":

  stage-deps    a stage crate (crates/NN-*) depends on no other stage crate, not even as a
                dev-dependency: each chapter must stand on its own.
  bench-deps    chat-bench depends on no stage crate: it measures them from the outside.
  core-pure     chat-core depends on nothing but `bytes` (proptest for its tests), and its
                source names no socket, thread, clock, file or process API: it is sans-IO.
  forbid-unsafe every crate whose source has no `unsafe` says `#![forbid(unsafe_code)]` at
                the top of each of its roots (src/lib.rs, src/main.rs, src/bin/*.rs).
  unused-deps   every dependency a crate declares is named in its code (src/ for
                [dependencies], also tests/ benches/ examples/ for [dev-dependencies]).

Python 3.11 or newer (tomllib). Reads files only; runs nothing.
"""

import re
import sys
import tempfile
import tomllib
from pathlib import Path

STAGE = re.compile(r"^\d\d-")
# chat-core may use these crates; the rest of the rule is about its source.
CORE_DEPS = {"bytes"}
CORE_DEV_DEPS = {"proptest"}
# What a sans-IO core must not name in its source (tests may build a fake clock's start).
CORE_FORBIDDEN = [
    r"std::net\b",
    r"std::thread\b",
    r"std::fs\b",
    r"std::process\b",
    r"\bInstant::now\b",
    r"\bSystemTime\b",
    r"std::os::",
    r"\blibc::",
    r"\bsocket2\b",
    r"\btokio\b",
    r"\bmio\b",
]


def members(root):
    """(directory, manifest) for every workspace member under crates/."""
    out = []
    for manifest in sorted((root / "crates").glob("*/Cargo.toml")):
        with open(manifest, "rb") as f:
            out.append((manifest.parent, tomllib.load(f)))
    return out


def deps(manifest, kinds=("dependencies", "dev-dependencies", "build-dependencies")):
    """{name: kind} of a manifest's dependencies, target-specific ones included."""
    found = {}
    tables = [manifest] + list(manifest.get("target", {}).values())
    for table in tables:
        for kind in kinds:
            for name in table.get(kind, {}):
                found.setdefault(name, kind)
    return found


def rust_files(directory, parts):
    files = []
    for part in parts:
        base = directory / part
        if base.is_dir():
            files += sorted(base.rglob("*.rs"))
    return files


def text_of(files):
    return "\n".join(strip_comments(f.read_text(encoding="utf-8")) for f in files)


def strip_comments(code):
    """Drops `//` comments (doc comments too), so that prose naming a crate does not count."""
    return "\n".join(re.sub(r"//.*$", "", line) for line in code.splitlines())


def check(root):
    """Every violation, as `rule: message` lines."""
    problems = []
    crates = members(root)
    by_package = {m["package"]["name"]: d for d, m in crates}
    stages = {m["package"]["name"] for d, m in crates if STAGE.match(d.name) and not d.name.startswith("00-")}
    for directory, manifest in crates:
        name = manifest["package"]["name"]
        declared = deps(manifest)
        if name in stages:
            for dep in declared:
                if dep in stages:
                    problems.append(f"stage-deps: {name} depends on the stage {dep}")
        if name == "chat-bench":
            for dep in declared:
                if dep in stages:
                    problems.append(f"bench-deps: chat-bench depends on the stage {dep}")
        if name == "chat-core":
            for dep, kind in declared.items():
                allowed = CORE_DEV_DEPS if kind == "dev-dependencies" else CORE_DEPS
                if dep not in allowed:
                    problems.append(f"core-pure: chat-core depends on {dep} ({kind})")
            source = text_of(rust_files(directory, ["src"]))
            for pattern in CORE_FORBIDDEN:
                if re.search(pattern, source):
                    problems.append(f"core-pure: chat-core's src/ names {pattern!r}")
        src_files = rust_files(directory, ["src"])
        if src_files and not re.search(r"\bunsafe\b", text_of(src_files)):
            roots = [directory / "src/lib.rs", directory / "src/main.rs"]
            roots += sorted((directory / "src/bin").glob("*.rs"))
            for root_file in roots:
                if root_file.exists() and "#![forbid(unsafe_code)]" not in root_file.read_text(encoding="utf-8"):
                    rel = root_file.relative_to(root)
                    problems.append(f"forbid-unsafe: {rel} has no #![forbid(unsafe_code)] (the crate has no unsafe)")
        code = text_of(src_files)
        test_code = code + "\n" + text_of(rust_files(directory, ["tests", "benches", "examples"]))
        for dep, kind in declared.items():
            if kind == "build-dependencies":
                continue
            ident = dep.replace("-", "_")
            lib_name = by_package.get(dep)
            if lib_name is not None:
                # A workspace crate may rename its library ([lib] name = ...).
                with open(lib_name / "Cargo.toml", "rb") as f:
                    ident = tomllib.load(f).get("lib", {}).get("name", ident)
            haystack = test_code if kind == "dev-dependencies" else code
            uses = re.search(rf"\b{re.escape(ident)}\b", haystack)
            if kind == "dev-dependencies" and not uses and dep in stages:
                uses = "CARGO_BIN_EXE_" in haystack  # a stage binary a test starts
            if not uses:
                problems.append(f"unused-deps: {name} declares {dep} ({kind}) but never names `{ident}`")
    return problems


def self_test():
    """Builds a tiny workspace that breaks every rule once, and checks each is reported."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def crate(folder, name, dependencies="", dev="", lib="", extra=""):
            d = root / "crates" / folder
            (d / "src").mkdir(parents=True)
            (d / "Cargo.toml").write_text(
                f'[package]\nname = "{name}"\n{extra}\n[dependencies]\n{dependencies}\n[dev-dependencies]\n{dev}\n'
            )
            (d / "src/lib.rs").write_text(lib)

        crate("chat-core", "chat-core", 'bytes = "1"\nsocket2 = "0.5"',
              lib="#![forbid(unsafe_code)]\nuse bytes::Bytes; fn f() { std::time::Instant::now(); }")
        crate("01-a", "chat-a", 'chat-b = { path = "../02-b" }', lib="use chat_b as _;")
        crate("02-b", "chat-b", 'log = "0.4"', lib="pub fn nothing() {}")
        crate("bench", "chat-bench", dev='chat-a = { path = "../01-a" }',
              lib="#![forbid(unsafe_code)]\n", extra="")
        problems = "\n".join(check(root))
        expected = [
            "stage-deps: chat-a depends on the stage chat-b",
            "bench-deps: chat-bench depends on the stage chat-a",
            "core-pure: chat-core depends on socket2",
            "core-pure: chat-core's src/ names '\\\\bInstant::now\\\\b'",
            "forbid-unsafe: crates/01-a/src/lib.rs has no #![forbid(unsafe_code)]",
            "unused-deps: chat-b declares log (dependencies) but never names `log`",
            "unused-deps: chat-bench declares chat-a (dev-dependencies)",
        ]
        missing = [e for e in expected if e not in problems]
        if missing:
            print("self-test FAILED: these violations were not reported:", *missing, sep="\n  ")
            print("reported:\n" + problems)
            return 1
        clean = root / "clean"
        (clean / "crates/chat-core/src").mkdir(parents=True)
        (clean / "crates/chat-core/Cargo.toml").write_text('[package]\nname = "chat-core"\n[dependencies]\nbytes = "1"\n')
        (clean / "crates/chat-core/src/lib.rs").write_text("#![forbid(unsafe_code)]\npub use bytes::Bytes;\n")
        if check(clean):
            print("self-test FAILED: a clean workspace was reported:", *check(clean), sep="\n  ")
            return 1
    print(f"self-test: every rule fails on its deliberate violation ({len(expected)} cases), a clean crate passes")
    return 0


def main():
    if "--self-test" in sys.argv[1:]:
        return self_test()
    root = Path(__file__).resolve().parent.parent
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"check_architecture: {len(problems)} violation(s) (see ARCHITECTURE.md, Invariants)")
        return 1
    print("check_architecture: stage and bench dependencies, chat-core's purity, forbid(unsafe_code), no unused dependencies: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
