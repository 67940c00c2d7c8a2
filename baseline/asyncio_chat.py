#!/usr/bin/env python3
"""The c10k-chat server in Python asyncio: the one the C10K articles teach, done carefully.

This is the baseline the Rust stages are measured against: the chat server of the book's
specification (book/src/specification.md), written the way the asyncio articles write a
server -- `asyncio.start_server`, one coroutine per client, `StreamReader` lines,
`writer.write()` and asyncio's own flow control -- plus what a careful Python programmer adds
to keep every promise of the specification. Standard library only; Python 3.11 or newer.

    python3 baseline/asyncio_chat.py                      # prints: listening on 127.0.0.1:7878
    python3 baseline/asyncio_chat.py --addr 127.0.0.1:0 --max-clients 10000 --outbox-bytes 262144
    nc 127.0.0.1 7878                                     # in two or more other terminals

It takes the flags of every stage (`--addr`, `--max-clients`, `--outbox-bytes`), prints the
one line `listening on ADDR` on stdout and logs to stderr (`--verbose` logs every client).
`--uvloop` runs it on uvloop instead of asyncio's own event loop, if that package is installed.
The conformance suite runs it like any stage binary:
`cargo test -p chat-testkit --test asyncio_baseline`.

How it maps onto the Rust code
------------------------------
The Rust stages share `chat-core`, a protocol without I/O. Here everything is in one file, in
the order bytes flow: `lines()` is chat-core's `Framer` (built on StreamReader's `limit`),
`parse()` its `command::parse`, `Hub` its `Hub` and `Server` (rooms, nicks, flow control,
closing) and `session()` is the per-client task of stages 8 to 10. A client's outbox is
asyncio's own: the transport writes what the socket takes at once and keeps the rest in its
write buffer. What a client is *owed* is that buffer (`transport.get_write_buffer_size()`),
plus the lines queued for it in the current turn of the event loop, bounded by
B = `--outbox-bytes`. A sender whose next line has no room at a recipient waits until
asyncio's own backpressure, `await writer.drain()` on that recipient, says it has caught up,
or it is cut (see `fall_behind`).

Where asyncio cannot do exactly what chat-core does, this file does the nearest honest thing,
and says so where it does it:

- *One write per client per turn.* The articles call `writer.write()` for every line. That
  costs a TCP segment per line, and a receive queue of thousands of tiny segments costs the
  kernel more than all the rest (1,500 clients arriving at once: 34 s instead of 3 s). So
  lines are queued for the rest of the current turn of the event loop and handed to each
  transport in one `writelines()`, as chat-core queues lines and flushes each outbox once.
- *The low mark.* A client that is behind catches up when it is owed B/2 or less, as in
  chat-core -- or, when the line that waits for it needs more than B/2 (only possible with a
  small B and a `/rooms` reply of 5 KB), when that line fits again: what asyncio's
  write-buffer marks can express without polling.
- *What "owed" counts.* chat-core counts 32 bytes of bookkeeping per queued line; asyncio's
  write buffer counts bytes only, so here the cost of a line is its bytes, nothing more.
- *Input kept while it waits.* A StreamReader reads until it holds 2 x `limit` (2 KiB) and
  then pauses its transport; one read is at most `READ_SIZE` (64 KiB, asyncio's default is
  256 KiB). So a sender whose input waits costs at most 66 KiB, as in the Rust stages.
- *Sharing.* chat-core shares one buffer per broadcast line between all recipients; here the
  line is encoded once and the same `bytes` object handed to every recipient, and a transport
  that cannot send it at once copies it into its own buffer.
- *Nick holds.* chat-core holds a freed nick until its departure is delivered, for its
  threaded stages. Here a departure is queued for every recipient, in order, before anyone
  else can run: a freed nick is free at once.
- *Out of descriptors.* asyncio handles EMFILE in accept by itself: it stops watching the
  listening socket and tries again one second later (`ACCEPT_RETRY_DELAY`; the Rust stages
  wait 100 ms), and meanwhile serves its clients. But it does not stop at the first EMFILE
  (see `serve`), so asyncio is given its default accept batch of 100, and only the kernel's
  listen backlog is 4096.
"""

import argparse
import asyncio
import errno
import functools
import logging
import re
import resource
import signal
import socket
import sys

log = logging.getLogger("asyncio_chat")

# The numbers of the specification. They are chat-core's constants, repeated here because this
# server shares no code with the Rust stages.
MAX_LINE = 1024  # bytes of one line before its \n, a \r included
DEFAULT_ADDR = "127.0.0.1:7878"
DEFAULT_MAX_CLIENTS = 10_000
DEFAULT_OUTBOX_BYTES = 262_144  # B: what a client may be owed
MIN_OUTBOX_BYTES = 8192  # B must hold the longest reply (a /rooms of 5 KB)
SLOW_GRACE = 1.0  # seconds a client may stay behind before it is cut
CLOSE_GRACE = 2.0  # seconds a closing connection has to take its last lines
SHUTDOWN_GRACE = 3.0  # seconds a stopping server gives all its clients, together
BACKLOG = 4096  # connections the kernel queues before we accept them
ACCEPTS_PER_WAKEUP = 100  # accept() calls asyncio makes per readiness of the listener
READ_SIZE = 64 * 1024  # bytes asyncio reads from a socket at once (its default: 256 KiB)
LIST_LIMIT = 100  # names in one /who or /rooms reply
NAME_MAX = 24  # letters in a nick or a room name
LOBBY = "lobby"

# Fixed lines. The framer's two errors are also its sentinels (see `lines`).
TOO_LONG = b"! line too long (max 1024 bytes)\n"
BAD_UTF8 = b"! invalid utf-8\n"
SERVER_FULL = b"! server full\n"
SHUTTING_DOWN = b"* server shutting down\n"
BYE = b"* bye\n"
HELP = (
    "* commands:",
    "*   TEXT            say TEXT to your room (start it with // to send a leading /)",
    "*   /nick NAME      change your nick (1-24 letters, digits, _ or -)",
    "*   /join ROOM      leave your room and enter ROOM (created if new)",
    "*   /msg NICK TEXT  send TEXT to NICK alone",
    "*   /who            list the members of your room",
    "*   /rooms          list the rooms",
    "*   /help           this list",
    "*   /quit [REASON]  leave",
)
HELP_REPLY = "".join(line + "\n" for line in HELP).encode()

# What one input line of n bytes can cost one recipient: n bytes of text plus at most 60 of
# nick and marker around it (the specification's "n + 60"), and its \n.
LINE_OVERHEAD = 64
# The longest reply: /rooms with 100 rooms of 24-letter names and 20-digit counts, then a tail.
LONGEST_REPLY = (
    len("* rooms: ") + LIST_LIMIT * (NAME_MAX + len(" ()") + 20) + (LIST_LIMIT - 1) * len(", ")
    + len(" and  more") + 20 + 1
)

# Where a connection is in its life.
OPEN = "open"  # reading and writing
CLOSING = "closing"  # done: written to until its FIN, what it sends is read and ignored
GONE = "gone"  # closed; the hub has forgotten it


# ---------------------------------------------------------------------------------------------
# Lines in: the specification's framing on top of StreamReader.
# ---------------------------------------------------------------------------------------------

# ANCHOR: lines
async def lines(reader):
    """The lines a client sends, as bytes without their \\n (or \\r\\n); empty lines skipped.

    A line longer than MAX_LINE comes out as the `TOO_LONG` reply, once, as soon as the limit
    is crossed; the rest of it is thrown away. The stream's end ends the iteration (bytes
    after the last \\n are an unfinished line, and are dropped).

    The bound is StreamReader's own: the server is started with `limit=MAX_LINE`, so
    `readuntil` refuses to return more than 1024 bytes before the \\n. It raises
    `LimitOverrunError` as soon as 1025 bytes without a \\n are buffered -- it does not wait
    for a \\n that may never come -- and leaves them in the buffer for us to drop.
    """
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return  # the end of the stream
        except asyncio.LimitOverrunError as overrun:
            yield TOO_LONG
            if not await skip_long_line(reader, overrun.consumed):
                return
            continue
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]  # telnet's \r\n
        if line:
            yield line


async def skip_long_line(reader, consumed):
    """Drops an over-long line up to and including its \\n; False if the stream ends first.

    `LimitOverrunError.consumed` counts bytes that hold no \\n (all of the buffer, or all
    before a \\n found too far away), so dropping exactly those and asking again is right in
    both cases: the next `readuntil` returns at once with the line's end, or overruns again.
    """
    while True:
        await reader.readexactly(consumed)  # already buffered: no wait, and then forgotten
        try:
            await reader.readuntil(b"\n")  # the end of the long line: dropped too
            return True
        except asyncio.LimitOverrunError as overrun:
            consumed = overrun.consumed
        except asyncio.IncompleteReadError:
            return False
# ANCHOR_END: lines


# ---------------------------------------------------------------------------------------------
# Commands: one line in, one command out (chat-core's command.rs).
# ---------------------------------------------------------------------------------------------

NAME = re.compile(r"[A-Za-z0-9_-]{1,24}")
# Nicks are unique regardless of case, in ASCII only: str.lower() would fold the Kelvin sign
# (U+212A) into "k", and `/msg \u212a` would reach the nick "k".
ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name):
    """A nick as the table of nicks knows it: ASCII letters lowercased, nothing else."""
    return name.translate(ASCII_FOLD)


def valid_name(name):
    """1 to 24 ASCII letters, digits, `_` or `-`: no marker (`<`, `[`, `*`, `!`) can be faked."""
    return NAME.fullmatch(name) is not None


def parse(line):
    """A command as a tuple: ("say", TEXT), ("nick", NAME), ("join", ROOM), ("msg", NICK,
    TEXT), ("who",), ("rooms",), ("help",), ("quit", REASON or None), or ("reply", BYTES) for
    a line whose only answer is an error to its sender."""
    if line is TOO_LONG:
        return ("reply", TOO_LONG)
    try:
        text = line.decode()  # strict: surrogates, overlong forms and > U+10FFFF are refused
    except UnicodeDecodeError:
        return ("reply", BAD_UTF8)
    if not text.startswith("/"):
        return ("say", text)
    if text.startswith("//"):
        return ("say", text[1:])  # `//TEXT` is the message `/TEXT`
    name, _, args = text[1:].partition(" ")
    match name:
        case "nick" | "join":
            if args and " " not in args:
                return (name, args)
            return usage("/nick NAME" if name == "nick" else "/join ROOM")
        case "msg":
            to, _, said = args.partition(" ")
            return ("msg", to, said) if to and said else usage("/msg NICK TEXT")
        case "who" | "rooms" | "help":
            return (name,) if not args else usage("/" + name)
        case "quit":
            return ("quit", args or None)
        case _:
            return ("reply", f"! unknown command: /{name}\n".encode())


def usage(text):
    return ("reply", f"! usage: {text}\n".encode())


def capped(prefix, items):
    """`PREFIX a, b, c` with at most LIST_LIMIT items, then ` and N more`."""
    text = prefix + ", ".join(items[:LIST_LIMIT])
    if len(items) > LIST_LIMIT:
        text += f" and {len(items) - LIST_LIMIT} more"
    return (text + "\n").encode()


# ---------------------------------------------------------------------------------------------
# The hub: clients, nicks, rooms, flow control and closing (chat-core's Hub and Server).
# ---------------------------------------------------------------------------------------------

class Client:
    """One connection, as the hub knows it. Plain data: the rules are the hub's."""

    # Slots, not a __dict__: an idle client should cost as little as the event loop lets it.
    __slots__ = (
        "id",  # a number for the logs, never reused
        "nick",  # as its owner chose it (case kept)
        "room",  # the room it is in; None once it has left the hub
        "writer",  # the StreamWriter: `write()`, `drain()`, `write_eof()`
        "transport",  # the writer's transport: what it is owed, its write-buffer marks
        "queued",  # lines queued in this turn of the event loop, not yet written; or None
        "queued_bytes",  # their length
        "state",  # OPEN, CLOSING or GONE
        "behind",  # None while it has room; else a future, done when it catches up or goes
        "low",  # while behind: owed at most this much, it has caught up
        "slow_timer",  # while behind: cuts it SLOW_GRACE after it fell behind
        "catching_up",  # while behind: the task that waits for its socket to drain
        "close_timer",  # while closing: closes it at the deadline, written or not
    )

    def __init__(self, id, writer):
        self.id = id
        self.nick = None
        self.room = None
        self.writer = writer
        self.transport = writer.transport
        self.queued = None
        self.queued_bytes = 0
        self.state = OPEN
        self.behind = None
        self.low = 0
        self.slow_timer = None
        self.catching_up = None
        self.close_timer = None

    def owed(self):
        """Bytes queued for it that its socket has not taken yet: in this turn of the event
        loop, and in asyncio's write buffer."""
        return self.queued_bytes + self.transport.get_write_buffer_size()

    def __repr__(self):
        return f"client {self.id} ({self.nick})"


class Hub:
    """Every client, nick and room of one server, and the rules of the specification.

    Everything here runs on the event loop's one thread and never awaits in the middle of a
    change, so a line is handled, and delivered into every recipient's buffer, in one piece:
    nothing else can happen between reading the rooms and writing to their members.
    """

    def __init__(self, max_clients, outbox_bytes):
        self.loop = asyncio.get_running_loop()
        self.max_clients = max_clients
        self.bound = outbox_bytes  # B
        self.connections = set()  # every connection not yet closed, open or closing
        self.nicks = {}  # fold(nick) -> Client: nicks are unique regardless of case
        self.rooms = {}  # room -> set of its members; a room exists while it has members
        self.guest_floor = 1  # no guestN below this is free
        self.next_id = 1
        self.stopping = False
        self.cuts = []  # slow consumers cut during a delivery, to be announced after it
        self.unwritten = []  # clients with lines queued in this turn of the event loop
        self.all_closed = None  # while stopping: done when the last connection is closed

    # ----- arriving and leaving ------------------------------------------------------------

    def connect(self, writer):
        """A new connection: welcomed into the lobby, or None when the server is full."""
        if self.stopping or len(self.connections) >= self.max_clients:
            return None
        client = Client(self.next_id, writer)
        self.next_id += 1
        # asyncio's write-buffer marks are the specification's: past B the transport counts
        # as paused, and it resumes at B/2 (see `fall_behind` for when they move).
        client.transport.set_write_buffer_limits(high=self.bound, low=self.bound // 2)
        self.connections.add(client)
        client.nick = self.guest_nick()
        self.nicks[fold(client.nick)] = client
        self.send(client, f"* welcome {client.nick} (type /help for commands)\n".encode())
        self.broadcast(LOBBY, f"* {client.nick} joined {LOBBY}\n".encode())
        self.rooms.setdefault(LOBBY, set()).add(client)
        client.room = LOBBY
        self.settle()
        log.debug("%r joined", client)
        return client

    def depart(self, client, reason=None):
        """The client leaves the hub: its room hears `* NICK left ROOM`, with `(REASON)` when
        the server closed it. Safe to call twice."""
        room = client.room
        if room is None:
            return
        client.room = None
        members = self.rooms[room]
        members.discard(client)
        if not members:
            del self.rooms[room]
        self.free_nick(client.nick)
        left = f"* {client.nick} left {room}" + (f" ({reason})" if reason else "")
        self.broadcast(room, (left + "\n").encode())

    def guest_nick(self):
        """The first free `guestN`, N counting from 1."""
        while True:
            nick = f"guest{self.guest_floor}"
            self.guest_floor += 1
            if nick not in self.nicks:
                return nick

    def free_nick(self, nick):
        key = fold(nick)
        del self.nicks[key]
        digits = key[len("guest"):]
        if key.startswith("guest") and digits.isdigit() and f"guest{int(digits)}" == key:
            # A freed guestN may be the lowest free one again (guest0 never is: N counts from 1).
            self.guest_floor = min(self.guest_floor, max(int(digits), 1))

    # ----- one line from a client ----------------------------------------------------------

    # ANCHOR: handle
    def handle(self, client, command):
        """Carries out one command of `client`. Called only when everyone it reaches has room
        (see `room_for`), with no await in between."""
        match command:
            case ("say", text):
                said = f"<{client.nick}> {text}\n".encode()  # encoded once, for everybody
                self.broadcast(client.room, said, but=client)
            case ("nick", name):
                self.rename(client, name)
            case ("join", room):
                self.join(client, room)
            case ("msg", to, text):
                target = self.nicks.get(fold(to))
                if target is None:
                    self.send(client, f"! no such user: {to}\n".encode())
                else:
                    self.send(target, f"[{client.nick}] {text}\n".encode())  # to self too
            case ("who",):
                nicks = sorted((m.nick for m in self.rooms[client.room]), key=fold)
                self.send(client, capped(f"* members of {client.room}: ", nicks))
            case ("rooms",):
                rooms = [f"{name} ({len(members)})" for name, members in sorted(self.rooms.items())]
                self.send(client, capped("* rooms: ", rooms))
            case ("help",):
                self.send(client, HELP_REPLY)
            case ("quit", reason):
                self.send(client, BYE)
                self.depart(client, reason)
                self.begin_close(client, self.loop.time() + CLOSE_GRACE)
            case ("reply", line):
                self.send(client, line)
        self.settle()
    # ANCHOR_END: handle

    def rename(self, client, name):
        if not valid_name(name):
            return self.send(client, f"! invalid nick: {name}\n".encode())
        key, old = fold(name), client.nick
        owner = self.nicks.get(key)
        if owner is not None and owner is not client:
            return self.send(client, f"! nick taken: {name}\n".encode())
        if key != fold(old):
            self.free_nick(old)
            self.nicks[key] = client
        client.nick = name
        self.send(client, f"* you are now {name}\n".encode())
        if old != name:  # also when only the case changed
            self.broadcast(client.room, f"* {old} is now {name}\n".encode(), but=client)

    def join(self, client, room):
        if not valid_name(room):
            return self.send(client, f"! invalid room: {room}\n".encode())
        old = client.room
        if room == old:
            return self.send(client, f"! already in {room}\n".encode())
        members = self.rooms[old]
        members.discard(client)
        if not members:
            del self.rooms[old]
        self.broadcast(old, f"* {client.nick} left {old}\n".encode())
        self.broadcast(room, f"* {client.nick} joined {room}\n".encode())
        members = self.rooms.setdefault(room, set())
        members.add(client)
        client.room = room
        self.send(client, f"* you joined {room} ({len(members)} members)\n".encode())

    # ----- flow control: who waits, and who is cut -----------------------------------------

    # ANCHOR: deliver
    def reach(self, client, command, size):
        """(recipient, bytes) for every client that `command` from `client` can send a line
        to, with the most that line can cost it. `size` is the input line's length."""
        cost = size + LINE_OVERHEAD
        match command:
            case ("say", _):
                yield from self.members(client.room, cost, but=client)
            case ("nick", _) | ("quit", _):
                yield client, cost
                yield from self.members(client.room, cost, but=client)
            case ("join", room):
                yield client, cost
                yield from self.members(client.room, cost, but=client)
                yield from self.members(room, cost, but=client)
            case ("msg", to, _):
                yield self.nicks.get(fold(to), client), cost
            case ("who",) | ("rooms",):
                yield client, LONGEST_REPLY
            case ("help",):
                yield client, len(HELP_REPLY)
            case ("reply", line):
                yield client, len(line)

    def members(self, room, cost, but):
        return ((m, cost) for m in self.rooms.get(room, ()) if m is not but)

    async def room_for(self, sender, command, size):
        """Input waits for room: returns once every client `command` reaches has room for
        what it can cost it (or once `sender` is closed). Until then the sender's session is
        here, not reading, and asyncio stops reading its socket when its buffer is full."""
        while sender.state is OPEN:
            for client, need in self.reach(sender, command, size):
                if not self.has_room(client, need):
                    await self.fall_behind(client, need)
                    break  # the rooms may have changed meanwhile: look again
            else:
                return

    def has_room(self, client, need):
        """Rule 2 for one recipient: owed plus `need` stays within B, and it is not behind."""
        if client.state is not OPEN:
            return True  # closing or gone: it gets nothing more anyway
        if client.behind is None and client.owed() + need <= self.bound:
            return True
        self.write_queued(client)  # first offer its socket what is queued: it may take it
        return client.behind is None and client.owed() + need <= self.bound

    def send(self, client, line):
        """Queues one line for a client. A notice that cannot wait may take a client past B,
        which makes it behind, or past 2 x B, which cuts it at once."""
        if client.state is not OPEN or client.transport.is_closing():
            return
        if client.queued is None:
            client.queued = []
            self.unwritten.append(client)
            if len(self.unwritten) == 1:
                self.loop.call_soon(self.write_all_queued)
        client.queued.append(line)
        client.queued_bytes += len(line)
        if client.owed() > self.bound and not self.stopping:
            self.write_queued(client)
            owed = client.owed()
            if owed > 2 * self.bound:
                self.cut(client, later=True)
            elif owed > self.bound:
                self.fall_behind(client, 0)

    def write_all_queued(self):
        """The end of a turn of the event loop: each client gets what was queued for it in
        that turn in one `writelines()`. One `write()` per line would be the articles' way,
        and it costs a TCP segment per line: when 1,500 clients arrive at once, each of them is
        sent 1,500 `joined` notices, and a receive queue of 1,500 tiny segments costs the
        kernel more than all the rest (it has to merge them to fit the buffer)."""
        clients, self.unwritten = self.unwritten, []
        for client in clients:
            self.write_queued(client)

    def write_queued(self, client):
        """Hands what is queued for a client to its transport, which writes what the socket
        takes at once and keeps the rest in its buffer."""
        if client.queued is None:
            return
        lines, client.queued, client.queued_bytes = client.queued, None, 0
        if client.state is OPEN and not client.transport.is_closing():
            client.writer.writelines(lines)

    def broadcast(self, room, line, but=None):
        """Queues one line for every member of `room` but `but`."""
        for member in self.rooms.get(room, ()):
            if member is not but:
                self.send(member, line)

    def fall_behind(self, client, need):
        """Marks a client without room for `need` more bytes as behind, and returns a future
        that is done when it catches up, is cut, or is closed.

        asyncio's `drain()` is the wait: it returns once the transport's buffer is at its low
        mark. Behind, the client's marks become `high = low = min(B/2, B - need)`: asyncio
        then counts it as paused at once (it is owed more than that, or the line would fit),
        and resumes it exactly when it has caught up; no polling, no timer but the grace.

        The senders do not call `drain()` themselves: several may wait for one client, and
        all must go on at once when it is cut or closed, or when the server stops, whether
        its socket drains or not. So one task per client that is behind awaits `drain()`, and
        the senders await the future, which `release` resolves whatever the reason."""
        self.write_queued(client)  # from now on, all it is owed is in the transport's buffer
        low = min(self.bound // 2, self.bound - need)
        if client.behind is None:
            client.behind = self.loop.create_future()
            client.low = low
            client.transport.set_write_buffer_limits(high=low, low=low)
            client.slow_timer = self.loop.call_later(SLOW_GRACE, self.judge, client)
            client.catching_up = asyncio.create_task(self.catch_up(client))
            log.debug("%r is behind: owed %d bytes", client, client.owed())
        elif low < client.low:  # a bigger line waits for it now
            client.low = low
            client.transport.set_write_buffer_limits(high=low, low=low)
        return client.behind

    async def catch_up(self, client):
        """While a client is behind: waits for its socket to take enough of what it is owed."""
        try:
            while client.state is OPEN and client.owed() > client.low:
                self.write_queued(client)  # (notices may have been queued meanwhile)
                await client.writer.drain()  # asyncio's own backpressure
        except OSError:
            # The connection failed: nothing more is written to it, and its session closes
            # it when it next looks. Nobody has to wait for it meanwhile.
            client.catching_up = None
            self.release(client)
            return
        client.catching_up = None
        if client.state is OPEN:
            self.caught_up(client)

    def caught_up(self, client):
        """It is owed little again: back to the usual marks, and whoever waited goes on."""
        client.transport.set_write_buffer_limits(high=self.bound, low=self.bound // 2)
        self.release(client)

    def release(self, client):
        """It is not behind any more (caught up, cut or closing): wake whoever waited for it."""
        if client.behind is None:
            return
        client.slow_timer.cancel()
        if client.catching_up is not None:
            client.catching_up.cancel()
        if not client.behind.done():  # (a waiter cancelled at exit cancels the future)
            client.behind.set_result(None)
        client.behind = client.slow_timer = client.catching_up = None

    def judge(self, client):
        """SLOW_GRACE after it fell behind: a client that has not caught up is a slow consumer."""
        if client.behind is None or client.state is not OPEN:
            return
        if client.owed() <= client.low:
            self.caught_up(client)  # written since, and its catch-up task not run yet
        else:
            self.cut(client)

    def cut(self, client, later=False):
        """Cuts a slow consumer: what it was owed is dropped, its socket closed at once, and its
        room told why. Within a delivery (`later`), the announcement waits until that delivery
        is done: a room is not changed while it is being written to."""
        log.info("%r cut as a slow consumer (owed %d bytes)", client, client.owed())
        self.close(client, abort=True)
        self.cuts.append(client)
        if not later:
            self.settle()

    def settle(self):
        """Announces the slow consumers cut meanwhile (which may cut others, in turn)."""
        while self.cuts:
            self.depart(self.cuts.pop(0), "slow consumer")
    # ANCHOR_END: deliver

    # ----- closing -------------------------------------------------------------------------

    def begin_close(self, client, deadline):
        """The server is done with a client (its /quit, its end of stream, the shutdown): what
        it is owed is written, then our FIN; what it still sends is read and ignored, until its
        own FIN; all of that by `deadline`, after which it is closed whatever is left."""
        if client.state is not OPEN:
            return
        self.write_queued(client)  # what it is owed goes first
        client.state = CLOSING
        self.release(client)  # nothing new is queued for a closing client: nobody waits for it
        client.writer.write_eof()  # asyncio sends the FIN once its buffer is written
        client.close_timer = self.loop.call_at(deadline, self.expire, client)

    def expire(self, client):
        client.close_timer = None
        if client.state is not GONE:
            log.debug("%r: close grace over, owed %d bytes", client, client.owed())
            self.close(client, abort=True)

    def goodbye(self, client):
        """The client ended its stream: every line it sent was handled; now it leaves."""
        if client.state is OPEN:
            self.depart(client)
            self.begin_close(client, self.loop.time() + CLOSE_GRACE)
            self.settle()

    async def flushed(self, client):
        """A closing client's last step: waits until everything it is owed is written (or its
        grace is over: the timer aborts the connection, which ends the wait)."""
        if client.state is CLOSING and client.owed():
            client.transport.set_write_buffer_limits(high=0)  # so drain() waits for every byte
            try:
                await client.writer.drain()
            except OSError:
                pass

    def close(self, client, abort=False):
        """Closes a connection and forgets it. Unless told to abort, a client still in the hub
        is announced as gone first; asyncio's `close()` is used only when nothing is owed
        (it would go on writing), `abort()` otherwise (what is owed is dropped). An abort
        changes no room, so a delivery may abort a connection (see `cut`)."""
        if client.state is GONE:
            return
        if client.state is OPEN and not abort:
            self.depart(client)
            self.settle()
        client.state = GONE
        self.release(client)
        if client.close_timer is not None:
            client.close_timer.cancel()
            client.close_timer = None
        if abort or client.owed():
            client.transport.abort()
        else:
            client.transport.close()
        client.queued, client.queued_bytes = None, 0
        self.connections.discard(client)
        if self.stopping and not self.connections and self.all_closed is not None:
            if not self.all_closed.done():
                self.all_closed.set_result(None)

    def shutdown(self):
        """SIGINT/SIGTERM: everybody gets `* server shutting down` after what it is owed, even
        past B (nobody is cut now), and is closed within SHUTDOWN_GRACE, all together."""
        self.stopping = True
        deadline = self.loop.time() + SHUTDOWN_GRACE
        for client in sorted(self.connections, key=lambda c: c.id):
            if client.state is OPEN:
                self.send(client, SHUTTING_DOWN)
                client.room = None  # nobody is told that others left
                self.begin_close(client, deadline)
        self.rooms.clear()
        self.nicks.clear()

    async def wait_closed(self):
        if self.connections:
            self.all_closed = self.loop.create_future()
            await self.all_closed


# ---------------------------------------------------------------------------------------------
# One coroutine per client.
# ---------------------------------------------------------------------------------------------

# ANCHOR: session
async def session(hub, reader, writer):
    """One client, from its welcome to its goodbye: asyncio runs one of these per connection."""
    # asyncio already sets TCP_NODELAY on every TCP transport; the specification asks for it.
    try:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # the peer is gone already: the first read will say so
    # One read is at most what the Rust stages read at once, so that a sender whose input
    # waits costs as much here (`max_size` is a plain attribute of asyncio's selector
    # transports, not a documented API; uvloop's transports have none).
    if hasattr(writer.transport, "max_size"):
        writer.transport.max_size = READ_SIZE
    client = hub.connect(writer)
    if client is None:
        writer.write(SERVER_FULL)  # a new socket's buffer is empty: this is sent now
        writer.close()
        return
    try:
        async for line in lines(reader):
            if client.state is not OPEN:
                continue  # after /quit, at shutdown: read, so that the close is clean, and ignored
            command = parse(line)
            await hub.room_for(client, command, len(line))  # input waits for room
            if client.state is OPEN:
                hub.handle(client, command)
        hub.goodbye(client)  # its end of stream: a normal goodbye
        await hub.flushed(client)
    except OSError as err:  # a reset, a timeout: ends this client only
        log.debug("%r: %s", client, err)
    except Exception:  # a bug: logged, and still only this client ends
        log.exception("%r: unexpected error", client)
    finally:
        hub.close(client)  # if it is still in the hub, its room hears that it left
# ANCHOR_END: session


# ---------------------------------------------------------------------------------------------
# Accepting, and stopping.
# ---------------------------------------------------------------------------------------------

# ANCHOR: serve
async def serve(host, port, max_clients, outbox_bytes):
    """Serves until SIGINT or SIGTERM, then says goodbye to everybody and returns."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_accept_errors)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    hub = Hub(max_clients, outbox_bytes)
    # `limit` bounds every line a StreamReader returns (see `lines`).
    #
    # start_server's `backlog` is used twice: as the kernel's queue of connections not yet
    # accepted (`listen`), and as how many `accept()`s asyncio tries each time the listener is
    # readable. The first must be 4096 (asyncio's default, 100, drops SYNs under a burst of
    # connects). The second must not: out of descriptors, asyncio goes on trying all of them,
    # each failing and each scheduling its own retry (CPython issue gh-151615, fixed upstream
    # in 2026), and with 4096 that cost a fifth to a third of a core here, for as long as the
    # descriptors were short. So asyncio gets 100, and the kernel 4096: we make the listening
    # socket ourselves, and `listen()` again once asyncio has.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
    server = await asyncio.start_server(
        functools.partial(session, hub), sock=listener, limit=MAX_LINE, backlog=ACCEPTS_PER_WAKEUP
    )
    try:
        listener.listen(BACKLOG)  # Linux takes a second listen() as a new backlog
    except OSError as err:  # (uvloop may have taken the socket over: it keeps 100)
        log.warning("could not raise the listen backlog to %d: %s", BACKLOG, err)
    name = listener.getsockname()
    address = f"[{name[0]}]:{name[1]}" if ":" in name[0] else f"{name[0]}:{name[1]}"
    print(f"listening on {address}", flush=True)
    log.info(
        "listening on %s (max %d clients, outbox %d bytes, %s)",
        address, max_clients, outbox_bytes, type(loop).__name__,
    )

    await stop.wait()
    log.info("shutting down")
    server.close()  # the listening socket: new connections are refused by the kernel
    hub.shutdown()
    try:
        # Every client has its deadline (SHUTDOWN_GRACE at most); a little more for the last
        # callbacks to run.
        await asyncio.wait_for(hub.wait_closed(), SHUTDOWN_GRACE + 0.5)
    except TimeoutError:
        log.warning("%d connections still open after the grace", len(hub.connections))


def quiet_accept_errors(loop, context):
    """asyncio reports running out of descriptors in accept through the loop's exception
    handler, with a traceback, once per failed accept (see `serve`). Here it is one line a
    second; every other error goes to asyncio's default handler."""
    err = context.get("exception")
    if isinstance(err, OSError) and err.errno in OUT_OF_RESOURCES:
        now = loop.time()
        if now >= quiet_accept_errors.quiet_until:
            quiet_accept_errors.quiet_until = now + 1.0
            log.warning("accept: %s; asyncio stops accepting for 1 s", err.strerror)
        return
    loop.default_exception_handler(context)


OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
quiet_accept_errors.quiet_until = 0.0  # when the next warning may be logged
# ANCHOR_END: serve


def raise_fd_limit():
    """Every connection is a descriptor, and the soft limit is often 1024: raise it to the
    hard limit (the most an unprivileged process may), or a C10K server fails at a thousand."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard or hard == resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as err:
            log.warning("could not raise the descriptor limit from %d: %s", soft, err)


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def parse_outbox_bytes(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if n < MIN_OUTBOX_BYTES:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_OUTBOX_BYTES}")
    return n


def main():
    flags = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    flags.add_argument("--addr", type=parse_addr, default=DEFAULT_ADDR,
                       help=f"address to listen on; port 0 picks a free port ({DEFAULT_ADDR})")
    flags.add_argument("--max-clients", type=int, default=DEFAULT_MAX_CLIENTS,
                       help=f"connection limit: beyond it, `! server full` ({DEFAULT_MAX_CLIENTS})")
    flags.add_argument("--outbox-bytes", type=parse_outbox_bytes, default=DEFAULT_OUTBOX_BYTES,
                       help=f"what a client may be owed, in bytes ({DEFAULT_OUTBOX_BYTES})")
    flags.add_argument("--uvloop", action="store_true",
                       help="run on uvloop instead of asyncio's own event loop")
    flags.add_argument("--verbose", action="store_true", help="log every client")
    args = flags.parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    loop_factory = None
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            sys.exit("asyncio_chat.py: --uvloop: the uvloop package is not installed")
        loop_factory = uvloop.new_event_loop
    raise_fd_limit()
    host, port = args.addr
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(host, port, args.max_clients, args.outbox_bytes))
    except OSError as err:  # cannot bind, most likely
        sys.exit(f"asyncio_chat.py: {err}")


if __name__ == "__main__":
    main()
