#!/usr/bin/env python3
"""An independent BOLT #8 peer, written from the BOLT #8 text, for driving
`p11noise listen`/`connect` (and the npm peer) over loopback TCP.

The handshake is the reference Noise engine (noise_ref.py) running
Noise_XK_secp256k1_ChaChaPoly_SHA256 with prologue "lightning", each act
prefixed by the version byte 0; the transport is BOLT #8's framing with one
chaining key per direction ("Lightning Message Key Rotation"). With
--pattern KK it speaks p11noise's default protocol instead: KK with prologue
"p11noise/1", the same act framing and the same transport.

    bolt8_ref.py selftest VECTORS.json
        the reference against BOLT #8 Appendix A (handshake and transport)
    bolt8_ref.py connect HOST:PORT --key HEX --peer PUBHEX [--count N] [--seed S]
                 [--window W] [--repeat R]
        initiator (R times, a fresh ephemeral each time): sends N messages (at most W unanswered) while reading
        their echoes back, checks every echo, prints "ok: N messages each way, K key rotations each way"
    bolt8_ref.py listen HOST:PORT --key HEX [--peer PUBHEX] [--max-conns N]
        responder that echoes every message; prints "listening on PORT" and
        "peer PUBHEX: M messages echoed" when a peer leaves

Both take --pattern XK|KK (default XK) and --prologue TEXT. A KK listener
needs --peer, the initiator's public key. HOST must be a loopback address.
"""
import argparse
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import noise_ref as nr  # noqa: E402

VERSION = 0
ROTATE_AT = 1000
MAX_MSG = 65535
TAG = 16


class Bolt8Error(Exception):
    pass


def _hkdf2(ck, ikm):
    temp = hmac_sha256(ck, ikm)
    out1 = hmac_sha256(temp, b"\x01")
    return out1, hmac_sha256(temp, out1 + b"\x02")


def hmac_sha256(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


class Direction:
    """One direction's key, nonce and chaining key."""

    def __init__(self, key, ck):
        self.k, self.n, self.ck = key, 0, ck
        self.rotations = 0

    def _step(self):
        self.n += 1
        if self.n == ROTATE_AT:
            self.ck, self.k = _hkdf2(self.ck, self.k)
            self.n = 0
            self.rotations += 1

    def seal(self, data):
        out = nr.CIPHERS["ChaChaPoly"](self.k, self.n, b"", data, False)
        self._step()
        return out

    def open(self, data):
        try:
            out = nr.CIPHERS["ChaChaPoly"](self.k, self.n, b"", data, True)
        except nr.InvalidTag:
            raise Bolt8Error("bad tag (nonce %d after %d rotations)"
                             % (self.n, self.rotations)) from None
        self._step()
        return out


class Transport:
    def __init__(self, sk, rk, ck):
        self.send = Direction(sk, ck)
        self.recv = Direction(rk, ck)

    def encrypt(self, m):
        if len(m) > MAX_MSG:
            raise Bolt8Error("message too long")
        return self.send.seal(struct.pack(">H", len(m))) + self.send.seal(m)

    def read_message(self, sock):
        lc = recv_exact(sock, 2 + TAG)
        if lc is None:
            return None
        (n,) = struct.unpack(">H", self.recv.open(lc))
        c = recv_exact(sock, n + TAG)
        if c is None:
            raise Bolt8Error("connection closed inside a message")
        return self.recv.open(c)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise Bolt8Error("connection closed after %d of %d bytes" % (len(buf), n))
            return None
        buf += chunk
    return buf


def random_key():
    while True:
        k = os.urandom(32)
        if 0 < int.from_bytes(k, "big") < nr.N:
            return k


def _transport(hs):
    """Split as BOLT #8 does: initiator (sk, rk), responder (rk, sk); both
    directions start from the final chaining key."""
    ck = hs.ss.ck
    c1, c2 = hs.ss.split()
    if hs.initiator:
        return Transport(c1.k, c2.k, ck)
    return Transport(c2.k, c1.k, ck)


def _act(payload_from_hs):
    return bytes([VERSION]) + payload_from_hs


def _check_act(data, n, which):
    if data is None or len(data) != n:
        raise Bolt8Error("%s: short read" % which)
    if data[0] != VERSION:
        raise Bolt8Error("%s: bad version %d" % (which, data[0]))
    return data[1:]


# The acts of each pattern (version byte included). XK is BOLT #8 itself;
# KK is p11noise's default: the same framing and transport, each side
# knowing the other's static key before the handshake.
ACTS = {"XK": (50, 50, 66), "KK": (50, 50)}
PROLOGUES = {"XK": b"lightning", "KK": b"p11noise/1"}


def _protocol(pattern):
    return "Noise_%s_secp256k1_ChaChaPoly_SHA256" % pattern


def handshake_initiator(sock, ls, rs, e=None, pattern="XK", prologue=None):
    acts = ACTS[pattern]
    hs = nr.HandshakeState(_protocol(pattern), True, _prologue(pattern, prologue), s=ls,
                           e=e or random_key(), rs=rs)
    for i, n in enumerate(acts):
        if i % 2 == 0:
            sock.sendall(_act(hs.write_message(b"")))
        else:
            hs.read_message(_check_act(recv_exact(sock, n), n, "act %d" % (i + 1)))
    return _transport(hs)


def handshake_responder(sock, ls, e=None, pattern="XK", prologue=None, rs=None):
    """rs: the initiator's static key, which KK needs before act one."""
    acts = ACTS[pattern]
    hs = nr.HandshakeState(_protocol(pattern), False, _prologue(pattern, prologue), s=ls,
                           e=e or random_key(), rs=rs)
    for i, n in enumerate(acts):
        if i % 2 == 0:
            hs.read_message(_check_act(recv_exact(sock, n), n, "act %d" % (i + 1)))
        else:
            sock.sendall(_act(hs.write_message(b"")))
    return _transport(hs), hs.rs


def _prologue(pattern, prologue):
    return PROLOGUES[pattern] if prologue is None else prologue


# ------------------------------------------------------------ self test

class _Pipe:
    """A socket stand-in for the self test: replays recorded bytes."""

    def __init__(self, incoming):
        self.incoming = bytearray(incoming)
        self.sent = b""

    def recv(self, n):
        out = bytes(self.incoming[:n])
        del self.incoming[:n]
        return out

    def sendall(self, data):
        self.sent += data


def selftest(path):
    with open(path) as f:
        cases = json.load(f)["cases"]
    passed = failed = 0
    for c in cases:
        name = c["name"]
        try:
            if name == "transport-message test":
                t = Transport(bytes.fromhex(c["sk"]), bytes.fromhex(c["rk"]),
                              bytes.fromhex(c["ck"]))
                pt = bytes.fromhex(c["plaintext_hex"])
                want = {int(k): bytes.fromhex(v) for k, v in c["outputs"].items()}
                for i in range(max(want) + 1):
                    out = t.encrypt(pt)
                    if i in want and out != want[i]:
                        raise Bolt8Error("message %d differs" % i)
            elif "successful" in name:
                steps = c["steps"]
                reads = b"".join(bytes.fromhex(s["read"]) for s in steps if "read" in s)
                writes = b"".join(bytes.fromhex(s["write"]) for s in steps if "write" in s)
                keys = [s["keys"] for s in steps if "keys" in s][0]
                pipe = _Pipe(reads)
                ls = bytes.fromhex(c["ls_priv"])
                e = bytes.fromhex(c["e_priv"])
                if c["role"] == "initiator":
                    t = handshake_initiator(pipe, ls, bytes.fromhex(c["rs_pub"]), e)
                else:
                    t, _ = handshake_responder(pipe, ls, e)
                if pipe.sent != writes:
                    raise Bolt8Error("acts differ")
                if (t.send.k.hex(), t.recv.k.hex()) != (keys["sk"], keys["rk"]):
                    raise Bolt8Error("keys differ")
            else:
                continue    # failure cases: p11noise's own tests cover them
            passed += 1
        except (Bolt8Error, nr.NoiseError) as exc:
            failed += 1
            print("FAIL %s: %s" % (name, exc))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


# ------------------------------------------------------------ network

def message(seed, i):
    """Message i of a run: lengths from 0 to 65535 bytes, mostly short."""
    h = hashlib.sha256(b"%s %d" % (seed.encode(), i)).digest()
    sel = h[0] % 16
    if sel == 0:
        n = 0
    elif sel == 1:
        n = MAX_MSG - h[1]
    elif sel < 4:
        n = 1000 + int.from_bytes(h[1:3], "big") % 8000
    else:
        n = int.from_bytes(h[1:3], "big") % 300
    return (h * (n // 32 + 1))[:n]


def split_addr(s):
    host, _, port = s.rpartition(":")
    host = host.strip("[]")
    if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
        raise SystemExit("only loopback addresses")
    return host, int(port)


def one_connection(args, ls, rs):
    """One handshake and echo run; returns (None, transport) or (why, None)."""
    host, port = split_addr(args.addr)
    sock = socket.create_connection((host, port), timeout=args.timeout)
    try:
        t = handshake_initiator(sock, ls, rs, pattern=args.pattern, prologue=args.prologue)
    except (Bolt8Error, nr.NoiseError, OSError) as exc:
        sock.close()
        return "handshake: %s" % exc, None
    errors = []
    lock = threading.Lock()
    # at most `window` messages in flight: both directions carry traffic at
    # once, yet a peer that stops reading a slow reader is never provoked
    window = threading.Semaphore(args.window)
    stop = threading.Event()

    def writer():
        try:
            for i in range(args.count):
                while not window.acquire(timeout=0.5):
                    if stop.is_set():
                        return
                data = t.encrypt(message(args.seed, i))
                sock.sendall(data)
        except OSError as exc:
            with lock:
                errors.append("sending: %s" % exc)

    th = threading.Thread(target=writer)
    th.start()
    got = 0
    try:
        while got < args.count:
            m = t.read_message(sock)
            if m is None:
                raise Bolt8Error("peer closed after %d echoes" % got)
            if m != message(args.seed, got):
                raise Bolt8Error("echo %d differs" % got)
            got += 1
            window.release()
    except (Bolt8Error, OSError) as exc:
        errors.append("%d echoes verified, echo %d: %s" % (got, got + 1, exc))
        stop.set()
        sock.shutdown(socket.SHUT_RDWR)
    th.join()
    sock.close()
    if errors:
        return "; ".join(errors), None
    return None, t


def run_connect(args):
    ls, rs = bytes.fromhex(args.key), bytes.fromhex(args.peer)
    for i in range(args.repeat):
        why, t = one_connection(args, ls, rs)
        if why is not None:
            print("FAIL: connection %d: %s" % (i + 1, why) if args.repeat > 1 else "FAIL: " + why)
            return 1
    if args.repeat > 1:
        print("ok: %d connections, %d messages each way in each"
              % (args.repeat, args.count))
    else:
        print("ok: %d messages each way, %d/%d key rotations sent/received"
              % (args.count, t.send.rotations, t.recv.rotations))
    return 0


def run_listen(args):
    host, port = split_addr(args.addr)
    ls = bytes.fromhex(args.key)
    remote = bytes.fromhex(args.peer) if args.peer else None
    if args.pattern == "KK" and remote is None:
        raise SystemExit("KK: --peer PUBHEX (the initiator's key) is required")
    srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(4)
    print("listening on %d" % srv.getsockname()[1], flush=True)
    status = 0
    for _ in range(args.max_conns):
        conn, _ = srv.accept()
        conn.settimeout(args.timeout)
        n = 0
        try:
            t, rs = handshake_responder(conn, ls, pattern=args.pattern,
                                        prologue=args.prologue, rs=remote)
            while True:
                m = t.read_message(conn)
                if m is None:
                    break
                conn.sendall(t.encrypt(m))
                n += 1
            print("peer %s: %d messages echoed, %d/%d key rotations received/sent"
                  % (rs.hex(), n, t.recv.rotations, t.send.rotations), flush=True)
        except (Bolt8Error, nr.NoiseError, OSError) as exc:
            print("FAIL: after %d messages: %s" % (n, exc), flush=True)
            status = 1
        conn.close()
    srv.close()
    return status


def main(argv):
    ap = argparse.ArgumentParser(description="independent BOLT #8 peer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("selftest")
    st.add_argument("vectors")
    c = sub.add_parser("connect")
    c.add_argument("addr")
    c.add_argument("--key", required=True)
    c.add_argument("--peer", required=True)
    c.add_argument("--count", type=int, default=3000)
    c.add_argument("--seed", default="bolt8 xcheck")
    c.add_argument("--window", type=int, default=32)
    c.add_argument("--repeat", type=int, default=1,
                   help="connections one after another, each with a new ephemeral")
    c.add_argument("--timeout", type=float, default=60)
    li = sub.add_parser("listen")
    li.add_argument("addr")
    li.add_argument("--key", required=True)
    li.add_argument("--peer")
    li.add_argument("--max-conns", type=int, default=1)
    li.add_argument("--timeout", type=float, default=60)
    for p in (c, li):
        p.add_argument("--pattern", choices=sorted(ACTS), default="XK")
        p.add_argument("--prologue", type=lambda x: x.encode(), default=None,
                       help="default: lightning for XK, p11noise/1 for KK")
    args = ap.parse_args(argv[1:])
    if args.cmd == "selftest":
        return selftest(args.vectors)
    if args.cmd == "connect":
        return run_connect(args)
    return run_listen(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
