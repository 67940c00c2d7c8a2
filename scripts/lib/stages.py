"""What the Python scripts share with the shell ones: the stage table and /proc readings.

The stage table lives once, in `scripts/lib/stages.sh` (the labels of `chat-bench compare`);
this reads it rather than copying it, so that a new stage appears in every script at once.
"""

import os
import re

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def stage_table():
    """{label: (binary, flags)}, in the order of scripts/lib/stages.sh."""
    rows = {}
    with open(os.path.join(REPO, "scripts", "lib", "stages.sh")) as f:
        for line in f:
            m = re.match(r"\s*stage_row\s+(\S+)\s+(\S+)(.*)$", line)
            if m:
                rows[m.group(1)] = (m.group(2), m.group(3).split())
    return rows


def release_dir():
    """Where the release binaries are: $CARGO_TARGET_DIR/release, or target/release."""
    return os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release")


def status_kib(pid, field):
    """A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`, ...), or None if it is not there."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None
