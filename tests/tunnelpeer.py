#!/usr/bin/env python3
"""Plain peers for tests/tunnel.sh: they send random bytes and hash what
they send and receive, so the two ends of a tunnel can be compared.

  tunnelpeer.py serve ADDR REPORT [options]   target: one thread per connection,
                                              one line per connection in REPORT;
                                              prints "listening on HOST:PORT" when ready
  tunnelpeer.py connect ADDR [options]        one connection, its line on stdout
  tunnelpeer.py many ADDR COUNT [options]     COUNT connections at once to an
                                              echo target, each checked
  tunnelpeer.py hold ADDR COUNT SECONDS       COUNT idle connections at once, kept
                                              open SECONDS, then closed
  tunnelpeer.py stall                         a listener that never answers: its
                                              accept queue is full, so the kernel
                                              drops new SYNs; prints its address

ADDR is HOST:PORT or unix:PATH. A report line is
  "sent SHA256 NBYTES received SHA256 NBYTES[ peer ID]".
Options:
  --send N        bytes of random data to send (default 0)
  --order O       both: send and receive at once (default); send-first:
                  send, shut down the write side, then read to the end;
                  recv-first: read to the end, then send and shut down
  --echo          (serve) send back what arrives, then shut down when it ends
  --pause S       do not read during the first S seconds
  --slow S        sleep S seconds after each read of at most 16 KiB
  --proxy         (serve) read a PROXY protocol v2 header first and report
                  TLV 0xE0 as the peer
  --reset-after N (many) the last connection resets itself after N bytes
"""
import hashlib
import os
import socket
import struct
import sys
import threading
import time

PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def opts(args):
    o = {"send": 0, "order": "both", "echo": False, "pause": 0.0, "slow": 0.0,
         "proxy": False, "reset_after": None}
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--echo", "--proxy"):
            o[a[2:]] = True
        else:
            key = a[2:].replace("-", "_")
            conv = float if key in ("pause", "slow") else (str if key == "order" else int)
            o[key] = conv(args[i + 1])
            i += 1
        i += 1
    return o


def sockaddr(addr):
    if addr.startswith("unix:"):
        return socket.AF_UNIX, addr[5:]
    host, port = addr.rsplit(":", 1)
    return socket.AF_INET, (host, int(port))


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError("connection ended inside the PROXY header")
        b += chunk
    return b


def read_proxy_header(s):
    head = recv_exact(s, 16)
    # Command PROXY (TLVs count only after it), TCP/IPv4, TCP/IPv6 or Unix
    # stream, with the address block of that family before the TLVs.
    addr_len = {0x11: 12, 0x21: 36, 0x31: 216}.get(head[13])
    if head[:12] != PP2_SIG or head[12] != 0x21 or addr_len is None:
        raise ValueError("not a PROXY v2 PROXY header: %r" % head)
    body = recv_exact(s, struct.unpack(">H", head[14:16])[0])
    if len(body) < addr_len:
        raise ValueError("PROXY v2 header shorter than its address block")
    body = body[addr_len:]
    peer = key = None
    while body:
        t, n = body[0], struct.unpack(">H", body[1:3])[0]
        if len(body) < 3 + n:
            raise ValueError("PROXY v2 TLV overruns the header")
        if t == 0xE0:
            peer = body[3:3 + n].decode()
        elif t == 0xE1:
            key = body[3:3 + n]
        body = body[3 + n:]
    if peer is None or key is None or len(key) != 33:
        raise ValueError("PROXY v2 header without the peer TLVs")
    return peer


class Stream:
    """Hashes of what one connection sent and received."""

    def __init__(self, s, o):
        self.s, self.o = s, o
        self.sent, self.got = hashlib.sha256(), hashlib.sha256()
        self.nsent = self.ngot = 0

    def send_all(self):
        left = self.o["send"]
        while left > 0:
            b = os.urandom(min(left, 65536))
            self.s.sendall(b)
            self.sent.update(b)
            self.nsent += len(b)
            left -= len(b)
        self.s.shutdown(socket.SHUT_WR)

    def recv_all(self, echo=False):
        if self.o["pause"]:
            time.sleep(self.o["pause"])
        size = 16384 if self.o["slow"] else 262144
        while True:
            b = self.s.recv(size)
            if not b:
                break
            self.got.update(b)
            self.ngot += len(b)
            if echo:
                self.s.sendall(b)
                self.sent.update(b)
                self.nsent += len(b)
            if self.o["slow"]:
                time.sleep(self.o["slow"])
        if echo:
            self.s.shutdown(socket.SHUT_WR)

    def run(self):
        if self.o["echo"]:
            self.recv_all(echo=True)
        elif self.o["order"] == "send-first":
            self.send_all()
            self.recv_all()
        elif self.o["order"] == "recv-first":
            self.recv_all()
            self.send_all()
        else:
            # A reset seen by the sending thread is reported once, to it:
            # the receiving side may then read a clean end.
            failed = []

            def send():
                try:
                    self.send_all()
                except OSError as e:
                    failed.append(e)

            t = threading.Thread(target=send)
            t.start()
            self.recv_all()
            t.join()
            if failed:
                raise failed[0]

    def line(self):
        return "sent %s %d received %s %d" % (self.sent.hexdigest(), self.nsent,
                                              self.got.hexdigest(), self.ngot)


def serve(addr, report, o):
    fam, sa = sockaddr(addr)
    ls = socket.socket(fam, socket.SOCK_STREAM)
    if fam == socket.AF_INET:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(sa)
    ls.listen(256)
    print("listening on %s" % ("%s:%d" % ls.getsockname() if fam == socket.AF_INET else addr),
          flush=True)
    lock = threading.Lock()

    def one(s):
        try:
            peer = read_proxy_header(s) if o["proxy"] else None
            st = Stream(s, o)
            st.run()
            text = st.line() + (" peer %s" % peer if peer else "")
        except Exception as e:  # reported, not fatal: the next connection goes on
            text = "error %s" % e
        s.close()
        with lock, open(report, "a") as f:
            f.write(text + "\n")

    while True:
        s, _ = ls.accept()
        threading.Thread(target=one, args=(s,), daemon=True).start()


def connect(addr):
    fam, sa = sockaddr(addr)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect(sa)
    return s


def many(addr, count, o):
    """COUNT connections at once to an echo target: each must get back
    exactly what it sent; the last one resets itself midway if asked."""
    results = [None] * count

    def one(i):
        try:
            s = connect(addr)
            st = Stream(s, o)
            if i == count - 1 and o["reset_after"] is not None:
                b = os.urandom(o["reset_after"])
                s.sendall(b)
                time.sleep(0.2)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                results[i] = "reset"
                return
            st.run()
            s.close()
            ok = st.sent.digest() == st.got.digest() and st.nsent == o["send"]
            results[i] = "ok" if ok else "bad: " + st.line()
        except Exception as e:
            results[i] = "error %s" % e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    good = sum(r == "ok" for r in results)
    print("%d ok of %d" % (good, count))
    for i, r in enumerate(results):
        if r not in ("ok", "reset"):
            print("connection %d: %s" % (i, r))
    return 0 if good == count - (o["reset_after"] is not None) else 1


def hold(addr, count, seconds):
    held = []
    for _ in range(count):
        held.append(connect(addr))
    time.sleep(seconds)
    for s in held:
        s.close()
    print("held %d" % count)


def stall():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    print("listening on %s:%d" % ls.getsockname(), flush=True)
    fill = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(ls.getsockname())
        except BlockingIOError:
            pass
        fill.append(s)
    time.sleep(600)


def main(argv):
    cmd = argv[1]
    if cmd == "stall":
        stall()
    elif cmd == "hold":
        hold(argv[2], int(argv[3]), float(argv[4]))
    if cmd == "serve":
        serve(argv[2], argv[3], opts(argv[4:]))
    elif cmd == "connect":
        s = connect(argv[2])
        st = Stream(s, opts(argv[3:]))
        st.run()
        print(st.line())
    elif cmd == "many":
        return many(argv[2], int(argv[3]), opts(argv[4:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
