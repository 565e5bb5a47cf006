#!/usr/bin/env python3
"""A second, independent Noise implementation for cross-checking p11noise.

Written from the Noise Protocol Framework specification, revision 34, and
nothing else: CipherState, SymmetricState and HandshakeState follow the
spec's sections 5.1-5.3 step by step, the pattern table is the spec's
section 7 (fundamental, one-way and deferred patterns) with the psk
modifiers of section 9, and the DH, cipher and hash functions are those of
sections 12.1-12.4. secp256k1 is not in the spec; it uses the convention
p11noise (and BOLT #8) fixes: 33-byte compressed public keys and
DH(k, P) = SHA256(compressed(k*P)).

Primitives come from python3-cryptography (X25519, X448, the two AEADs) and
hashlib; secp256k1 is plain integer arithmetic below, so no line of the
C library is shared.

    noise_ref.py check FILE...   runs cacophony-format vectors; prints
                                 "N passed, N failed" and exits 1 on a failure
"""
import hashlib
import hmac
import json
import struct
import sys

from cryptography.hazmat.primitives.asymmetric import x25519, x448
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization
from cryptography.exceptions import InvalidTag


class NoiseError(Exception):
    pass


# ---------------------------------------------------------------- secp256k1

P = 2**256 - 2**32 - 977
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
GX = 0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798
GY = 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8


def _jac_double(pt):
    x, y, z = pt
    if z == 0 or y == 0:
        return (0, 1, 0)
    yy = y * y % P
    s = 4 * x * yy % P
    m = 3 * x * x % P          # a = 0 on secp256k1
    x3 = (m * m - 2 * s) % P
    y3 = (m * (s - x3) - 8 * yy * yy) % P
    z3 = 2 * y * z % P
    return (x3, y3, z3)


def _jac_add(p1, p2):
    if p1[2] == 0:
        return p2
    if p2[2] == 0:
        return p1
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    if u1 == u2:
        return _jac_double(p1) if s1 == s2 else (0, 1, 0)
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    z3 = h * z1 * z2 % P
    return (x3, y3, z3)


def _to_affine(pt):
    x, y, z = pt
    if z == 0:
        return None
    zi = pow(z, P - 2, P)
    zi2 = zi * zi % P
    return (x * zi2 % P, y * zi2 * zi % P)


def secp_mul(k, point):
    """k * point (affine in, affine out, None for infinity). Not
    constant-time: this is a test reference, never used with real keys."""
    acc = (0, 1, 0)
    addend = (point[0], point[1], 1)
    while k:
        if k & 1:
            acc = _jac_add(acc, addend)
        addend = _jac_double(addend)
        k >>= 1
    return _to_affine(acc)


def secp_add(p1, p2):
    a = (p1[0], p1[1], 1) if p1 else (0, 1, 0)
    b = (p2[0], p2[1], 1) if p2 else (0, 1, 0)
    return _to_affine(_jac_add(a, b))


def secp_compress(pt):
    return bytes([2 + (pt[1] & 1)]) + pt[0].to_bytes(32, "big")


def secp_decompress(data):
    """The point a 33-byte compressed key names; anything else is refused."""
    if len(data) != 33 or data[0] not in (2, 3):
        raise NoiseError("secp256k1: not a compressed point")
    x = int.from_bytes(data[1:], "big")
    if x >= P:
        raise NoiseError("secp256k1: x out of range")
    rhs = (pow(x, 3, P) + 7) % P
    y = pow(rhs, (P + 1) // 4, P)
    if y * y % P != rhs:
        raise NoiseError("secp256k1: not on the curve")
    if (y & 1) != (data[0] & 1):
        y = P - y
    return (x, y)


def secp_scalar(priv):
    if len(priv) != 32:
        raise NoiseError("secp256k1: private key must be 32 bytes")
    k = int.from_bytes(priv, "big")
    if not 0 < k < N:
        raise NoiseError("secp256k1: private key out of range")
    return k


def secp_pubkey(priv):
    return secp_compress(secp_mul(secp_scalar(priv), (GX, GY)))


def secp_dh(priv, pub):
    shared = secp_mul(secp_scalar(priv), secp_decompress(pub))
    if shared is None:
        raise NoiseError("secp256k1: DH result is the point at infinity")
    return hashlib.sha256(secp_compress(shared)).digest()


# ------------------------------------------------------- DH functions (12.1)

class DH:
    """name, dhlen (bytes of a public key on the wire), pubkey(priv), dh()."""

    def __init__(self, name, dhlen, privlen, pubkey, dh):
        self.name, self.dhlen, self.privlen = name, dhlen, privlen
        self.pubkey, self.dh = pubkey, dh


def _raw(pub):
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _xdh(privcls, pubcls):
    def pubkey(priv):
        return _raw(privcls.from_private_bytes(priv).public_key())

    def dh(priv, pub):
        return privcls.from_private_bytes(priv).exchange(pubcls.from_public_bytes(pub))
    return pubkey, dh


DHS = {
    "25519": DH("25519", 32, 32, *_xdh(x25519.X25519PrivateKey, x25519.X25519PublicKey)),
    "448": DH("448", 56, 56, *_xdh(x448.X448PrivateKey, x448.X448PublicKey)),
    "secp256k1": DH("secp256k1", 33, 32, secp_pubkey, secp_dh),
}


# ------------------------------------------------------------ ciphers (12.3)

def _chacha(k, n, ad, data, decrypt):
    nonce = b"\0\0\0\0" + struct.pack("<Q", n)
    aead = ChaCha20Poly1305(k)
    return aead.decrypt(nonce, data, ad) if decrypt else aead.encrypt(nonce, data, ad)


def _aesgcm(k, n, ad, data, decrypt):
    nonce = b"\0\0\0\0" + struct.pack(">Q", n)
    aead = AESGCM(k)
    return aead.decrypt(nonce, data, ad) if decrypt else aead.encrypt(nonce, data, ad)


CIPHERS = {"ChaChaPoly": _chacha, "AESGCM": _aesgcm}

# hash name -> (constructor, HASHLEN); HMAC takes its block length from it
HASHES = {
    "SHA256": (hashlib.sha256, 32),
    "SHA512": (hashlib.sha512, 64),
    "BLAKE2s": (hashlib.blake2s, 32),
    "BLAKE2b": (hashlib.blake2b, 64),
}

MAX_NONCE = 2**64 - 1


# ------------------------------------------------------- CipherState (5.1)

class CipherState:
    def __init__(self, cipher):
        self.cipher = cipher
        self.k = None
        self.n = 0

    def initialize_key(self, key):
        self.k = key
        self.n = 0

    def has_key(self):
        return self.k is not None

    def _next_nonce(self):
        if self.n == MAX_NONCE:   # 2^64-1 is reserved for rekey
            raise NoiseError("nonce exhausted")
        n = self.n
        self.n += 1
        return n

    def encrypt_with_ad(self, ad, plaintext):
        if self.k is None:
            return plaintext
        return self.cipher(self.k, self._next_nonce(), ad, plaintext, False)

    def decrypt_with_ad(self, ad, ciphertext):
        if self.k is None:
            return ciphertext
        # the nonce is spent only when decryption succeeds
        try:
            out = self.cipher(self.k, self.n, ad, ciphertext, True)
        except InvalidTag:
            raise NoiseError("bad tag") from None
        self._next_nonce()
        return out

    def rekey(self):
        self.k = self.cipher(self.k, MAX_NONCE, b"", bytes(32), False)[:32]


# ---------------------------------------------------- SymmetricState (5.2)

class SymmetricState:
    def __init__(self, protocol_name, cipher, hashname):
        self.hashfn, self.hashlen = HASHES[hashname]
        self.cs = CipherState(cipher)
        self.cipher = cipher
        name = protocol_name.encode()
        if len(name) <= self.hashlen:
            self.h = name + bytes(self.hashlen - len(name))
        else:
            self.h = self.hash(name)
        self.ck = self.h

    def hash(self, data):
        return self.hashfn(data).digest()

    def hmac(self, key, data):
        return hmac.new(key, data, self.hashfn).digest()

    def hkdf(self, ck, ikm, outputs):
        temp = self.hmac(ck, ikm)
        out1 = self.hmac(temp, b"\x01")
        out2 = self.hmac(temp, out1 + b"\x02")
        if outputs == 2:
            return out1, out2
        return out1, out2, self.hmac(temp, out2 + b"\x03")

    def mix_key(self, ikm):
        self.ck, temp_k = self.hkdf(self.ck, ikm, 2)
        self.cs.initialize_key(temp_k[:32])

    def mix_hash(self, data):
        self.h = self.hash(self.h + data)

    def mix_key_and_hash(self, ikm):
        self.ck, temp_h, temp_k = self.hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cs.initialize_key(temp_k[:32])

    def encrypt_and_hash(self, plaintext):
        ct = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext):
        pt = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return pt

    def split(self):
        k1, k2 = self.hkdf(self.ck, b"", 2)
        c1, c2 = CipherState(self.cipher), CipherState(self.cipher)
        c1.initialize_key(k1[:32])
        c2.initialize_key(k2[:32])
        return c1, c2


# -------------------------------------------------------- patterns (7, 9)

# name -> (initiator pre-message, responder pre-message, messages); the
# first message goes initiator -> responder and they alternate.
def _p(pre_i, pre_r, *msgs):
    return ([t for t in pre_i.split()], [t for t in pre_r.split()],
            [[t for t in m.replace(",", " ").split()] for m in msgs])


PATTERNS = {
    # one-way (7.4)
    "N": _p("", "s", "e, es"),
    "K": _p("s", "s", "e, es, ss"),
    "X": _p("", "s", "e, es, s, ss"),
    # fundamental interactive (7.5)
    "NN": _p("", "", "e", "e, ee"),
    "NK": _p("", "s", "e, es", "e, ee"),
    "NX": _p("", "", "e", "e, ee, s, es"),
    "KN": _p("s", "", "e", "e, ee, se"),
    "KK": _p("s", "s", "e, es, ss", "e, ee, se"),
    "KX": _p("s", "", "e", "e, ee, se, s, es"),
    "XN": _p("", "", "e", "e, ee", "s, se"),
    "XK": _p("", "s", "e, es", "e, ee", "s, se"),
    "XX": _p("", "", "e", "e, ee, s, es", "s, se"),
    "IN": _p("", "", "e, s", "e, ee, se"),
    "IK": _p("", "s", "e, es, s, ss", "e, ee, se"),
    "IX": _p("", "", "e, s", "e, ee, se, s, es"),
    # deferred (7.6)
    "NK1": _p("", "s", "e", "e, ee, es"),
    "NX1": _p("", "", "e", "e, ee, s", "es"),
    "X1N": _p("", "", "e", "e, ee", "s", "se"),
    "X1K": _p("", "s", "e, es", "e, ee", "s", "se"),
    "XK1": _p("", "s", "e", "e, ee, es", "s, se"),
    "X1K1": _p("", "s", "e", "e, ee, es", "s", "se"),
    "X1X": _p("", "", "e", "e, ee, s, es", "s", "se"),
    "XX1": _p("", "", "e", "e, ee, s", "es, s, se"),
    "X1X1": _p("", "", "e", "e, ee, s", "es, s", "se"),
    "K1N": _p("s", "", "e", "e, ee", "se"),
    "K1K": _p("s", "s", "e, es", "e, ee", "se"),
    "KK1": _p("s", "s", "e", "e, ee, se, es"),
    "K1K1": _p("s", "s", "e", "e, ee, es", "se"),
    "K1X": _p("s", "", "e", "e, ee, s, es", "se"),
    "KX1": _p("s", "", "e", "e, ee, se, s", "es"),
    "K1X1": _p("s", "", "e", "e, ee, s", "se, es"),
    "I1N": _p("", "", "e, s", "e, ee", "se"),
    "I1K": _p("", "s", "e, es, s", "e, ee", "se"),
    "IK1": _p("", "s", "e, s", "e, ee, se, es"),
    "I1K1": _p("", "s", "e, s", "e, ee, es", "se"),
    "I1X": _p("", "", "e, s", "e, ee, s, es", "se"),
    "IX1": _p("", "", "e, s", "e, ee, se, s", "es"),
    "I1X1": _p("", "", "e, s", "e, ee, s", "se, es"),
}

ONE_WAY = ("N", "K", "X")


def parse_protocol(name):
    """'Noise_XXpsk0+psk3_25519_AESGCM_SHA256' -> (base pattern, psk
    positions, dh, cipher, hash), or NoiseError if anything is unknown."""
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise NoiseError("bad protocol name %r" % name)
    _, pat, dh, cipher, hashname = parts
    base = pat
    mods = []
    # the pattern is the longest known prefix; modifiers follow, '+'-joined
    for cut in range(len(pat), 0, -1):
        if pat[:cut] in PATTERNS:
            base = pat[:cut]
            rest = pat[cut:]
            mods = rest.split("+") if rest else []
            break
    else:
        raise NoiseError("unknown pattern in %r" % name)
    psks = []
    for m in mods:
        if not m.startswith("psk") or not m[3:].isdigit():
            raise NoiseError("unsupported modifier %r" % m)
        psks.append(int(m[3:]))
    if dh not in DHS or cipher not in CIPHERS or hashname not in HASHES:
        raise NoiseError("unsupported algorithm in %r" % name)
    return base, psks, dh, cipher, hashname


def pattern_messages(base, psks):
    """The message patterns with the psk modifiers applied (9.2): psk0 puts
    a "psk" token at the start of the first message, pskN (N >= 1) at the
    end of the Nth."""
    pre_i, pre_r, msgs = PATTERNS[base]
    msgs = [list(m) for m in msgs]
    for n in psks:
        if n > len(msgs):
            raise NoiseError("psk%d past the last message" % n)
        if n == 0:
            msgs[0].insert(0, "psk")
        else:
            msgs[n - 1].append("psk")
    return pre_i, pre_r, msgs


# ------------------------------------------------------ HandshakeState (5.3)

class HandshakeState:
    def __init__(self, protocol_name, initiator, prologue=b"", s=None, e=None,
                 rs=None, re=None, psks=()):
        """s and e are private keys; rs and re public keys; e, if given, is
        the ephemeral the first "e" token uses (vectors fix it)."""
        base, psk_pos, dhname, ciphername, hashname = parse_protocol(protocol_name)
        self.dh = DHS[dhname]
        self.initiator = initiator
        self.one_way = base in ONE_WAY
        pre_i, pre_r, self.messages = pattern_messages(base, psk_pos)
        self.has_psk = bool(psk_pos)
        self.psks = list(psks)
        self.ss = SymmetricState(protocol_name, CIPHERS[ciphername], hashname)
        self.s = s
        self.s_pub = self.dh.pubkey(s) if s else None
        self.e = e
        self.e_pub = self.dh.pubkey(e) if e else None
        self.rs, self.re = rs, re
        self.ss.mix_hash(prologue)
        # pre-messages: the initiator's keys first, then the responder's
        for owner, tokens in ((True, pre_i), (False, pre_r)):
            for t in tokens:
                mine = owner == initiator
                if t == "s":
                    key = self.s_pub if mine else self.rs
                else:
                    key = self.e_pub if mine else self.re
                if key is None:
                    raise NoiseError("pre-message key %s missing" % t)
                self.ss.mix_hash(key)
                if t == "e" and self.has_psk:
                    self.ss.mix_key(key)
        self.msg_index = 0

    def my_turn(self):
        return (self.msg_index % 2 == 0) == self.initiator

    def done(self):
        return self.msg_index == len(self.messages)

    def _dh_token(self, t):
        # "es": initiator's e with responder's s; the first letter is always
        # the initiator's key
        ini, resp = t[0], t[1]
        mine, theirs = (ini, resp) if self.initiator else (resp, ini)
        priv = self.e if mine == "e" else self.s
        pub = self.re if theirs == "e" else self.rs
        if priv is None or pub is None:
            raise NoiseError("token %s: key missing" % t)
        self.ss.mix_key(self.dh.dh(priv, pub))

    def _psk(self):
        if not self.psks:
            raise NoiseError("psk token without a psk")
        psk = self.psks.pop(0)
        if len(psk) != 32:
            raise NoiseError("psk must be 32 bytes")
        self.ss.mix_key_and_hash(psk)

    def write_message(self, payload, new_ephemeral=None):
        if self.done() or not self.my_turn():
            raise NoiseError("not our turn to write")
        out = b""
        for t in self.messages[self.msg_index]:
            if t == "e":
                if new_ephemeral is not None:
                    self.e = new_ephemeral
                if self.e is None:
                    raise NoiseError("no ephemeral key")
                self.e_pub = self.dh.pubkey(self.e)
                out += self.e_pub
                self.ss.mix_hash(self.e_pub)
                if self.has_psk:
                    self.ss.mix_key(self.e_pub)
            elif t == "s":
                out += self.ss.encrypt_and_hash(self.s_pub)
            elif t == "psk":
                self._psk()
            else:
                self._dh_token(t)
        out += self.ss.encrypt_and_hash(payload)
        self.msg_index += 1
        return out

    def read_message(self, message):
        if self.done() or self.my_turn():
            raise NoiseError("not our turn to read")
        pos = 0
        dhlen = self.dh.dhlen
        for t in self.messages[self.msg_index]:
            if t == "e":
                if len(message) - pos < dhlen:
                    raise NoiseError("short message")
                self.re = message[pos:pos + dhlen]
                pos += dhlen
                if self.dh.name == "secp256k1":
                    secp_decompress(self.re)
                self.ss.mix_hash(self.re)
                if self.has_psk:
                    self.ss.mix_key(self.re)
            elif t == "s":
                n = dhlen + (16 if self.ss.cs.has_key() else 0)
                if len(message) - pos < n:
                    raise NoiseError("short message")
                self.rs = self.ss.decrypt_and_hash(message[pos:pos + n])
                pos += n
                if self.dh.name == "secp256k1":
                    secp_decompress(self.rs)
            elif t == "psk":
                self._psk()
            else:
                self._dh_token(t)
        if self.ss.cs.has_key() and len(message) - pos < 16:
            raise NoiseError("short message")
        payload = self.ss.decrypt_and_hash(message[pos:])
        self.msg_index += 1
        return payload

    def handshake_hash(self):
        return self.ss.h

    def split(self):
        """(send, receive) CipherStates for this party; in a one-way pattern
        the responder's send and the initiator's receive are None."""
        if not self.done():
            raise NoiseError("handshake not finished")
        c1, c2 = self.ss.split()
        if self.initiator:
            return c1, (None if self.one_way else c2)
        return (None if self.one_way else c2), c1


# --------------------------------------------------------- vector runner

def _hex(v, key, default=None):
    x = v.get(key)
    return bytes.fromhex(x) if x is not None else default


def run_vector(v):
    """Plays both roles of a cacophony vector; returns None or why it failed."""
    name = v["protocol_name"]
    try:
        ini = HandshakeState(name, True, _hex(v, "init_prologue", b""),
                             s=_hex(v, "init_static"), e=_hex(v, "init_ephemeral"),
                             rs=_hex(v, "init_remote_static"),
                             psks=[bytes.fromhex(p) for p in v.get("init_psks", [])])
        resp = HandshakeState(name, False, _hex(v, "resp_prologue", b""),
                              s=_hex(v, "resp_static"), e=_hex(v, "resp_ephemeral"),
                              rs=_hex(v, "resp_remote_static"),
                              psks=[bytes.fromhex(p) for p in v.get("resp_psks", [])])
        send = recv = None
        for i, m in enumerate(v["messages"]):
            payload = bytes.fromhex(m["payload"])
            want = bytes.fromhex(m["ciphertext"])
            if not ini.done():
                writer, reader = (ini, resp) if i % 2 == 0 else (resp, ini)
                ct = writer.write_message(payload)
                if ct != want:
                    return "message %d: ciphertext differs" % i
                if reader.read_message(ct) != payload:
                    return "message %d: payload differs" % i
                if ini.done():
                    if ini.handshake_hash() != resp.handshake_hash():
                        return "handshake hashes differ"
                    hh = _hex(v, "handshake_hash")
                    if hh is not None and hh != ini.handshake_hash():
                        return "handshake hash differs"
                    send = ini.split()
                    recv = resp.split()
                continue
            from_ini = ini.one_way or i % 2 == 0
            enc = send[0] if from_ini else recv[0]
            dec = recv[1] if from_ini else send[1]
            ct = enc.encrypt_with_ad(b"", payload)
            if ct != want:
                return "message %d: ciphertext differs" % i
            if dec.decrypt_with_ad(b"", ct) != payload:
                return "message %d: payload differs" % i
        if not ini.done():
            return "the vector ends before the handshake does"
    except NoiseError as exc:
        return str(exc)
    return None


def main(argv):
    if len(argv) < 3 or argv[1] != "check":
        print(__doc__.strip().splitlines()[-3].strip(), file=sys.stderr)
        return 2
    passed = failed = 0
    for path in argv[2:]:
        with open(path) as f:
            vectors = json.load(f)["vectors"]
        for v in vectors:
            why = run_vector(v)
            if why is None:
                passed += 1
            else:
                failed += 1
                print("FAIL %s: %s" % (v.get("protocol_name"), why))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
