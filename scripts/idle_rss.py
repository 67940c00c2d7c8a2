#!/usr/bin/env python3
"""What an idle client costs a chat server: resident memory growth per connection.

Starts a server (the asyncio baseline unless told otherwise, or any stage binary), connects a
probe, reads the server's VmRSS, connects N clients that each move to a room of their own (so
that nobody is sent the others' arrivals) and stay idle, and reads VmRSS again. The same
method as the conformance suite's `idle_clients_cost_little` check, at a size of your choice:

    python3 scripts/idle_rss.py                        # the asyncio baseline, 1,000 clients
    python3 scripts/idle_rss.py --clients 10000
    python3 scripts/idle_rss.py --server target/release/chat-epoll
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise RuntimeError("the server closed the connection")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def join(self, room):
        self.sock.sendall(f"/join {room}\n".encode())
        want = f"* you joined {room} (1 members)"
        while (line := self.line()) != want:
            if not line.startswith("* "):
                raise RuntimeError(f"expected {want!r}, got {line!r}")


def main():
    flags = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    flags.add_argument("--server", default=os.path.join(HERE, "..", "baseline", "asyncio_chat.py"))
    flags.add_argument("--clients", type=int, default=1000)
    args = flags.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # we hold N sockets too

    server = subprocess.Popen(
        [args.server, "--addr", "127.0.0.1:0", "--max-clients", str(args.clients + 1)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = int(server.stdout.readline().decode().rsplit(":", 1)[1])
        # What is allocated once (the first connection's objects, the allocator's first
        # arenas) belongs in the "before" figure.
        probe = Client(port)
        probe.line()
        probe.join("probe")
        time.sleep(0.2)
        before = vm_rss_kib(server.pid)
        clients = []
        for i in range(args.clients):
            c = Client(port)
            if not (welcome := c.line()).startswith("* welcome "):
                raise RuntimeError(f"client {i}: expected a welcome, got {welcome!r}")
            c.join(f"room{i}")
            clients.append(c)
        time.sleep(0.5)
        after = vm_rss_kib(server.pid)
        per_client = (after - before) * 1024 / args.clients
        print(
            f"{os.path.basename(args.server)}: VmRSS {before} KiB -> {after} KiB with "
            f"{args.clients} idle clients: {per_client:.0f} bytes each"
        )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
