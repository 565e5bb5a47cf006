#!/usr/bin/env python3
"""Generates the cross-check vector files from the independent reference
(noise_ref.py), in the cacophony format `p11noise vectors` reads:

  tests/vectors/secp256k1.json  KK and XK (the project's protocols) with
                                handshake payloads from 0 bytes up to a
                                65535-byte message and transport messages
                                both ways; then every pattern of the spec,
                                without and with psk modifiers, with both
                                ciphers and all four hashes
  tests/vectors/curve448.json   a handful of patterns over Curve448

Every key, psk, prologue and payload is derived from fixed labels, so a
rerun writes the same bytes:

    python3 tests/xcheck/gen_vectors.py [OUTDIR]    (default tests/vectors)
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import noise_ref as nr  # noqa: E402

MAX_MSG = 65535
TAG = 16


def stream(label, n):
    """n deterministic bytes named by label."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"p11noise xcheck %s %d" % (label.encode(), i)).digest()
        i += 1
    return out[:n]


def private_key(dh, label):
    """A valid private key for dh named by label (secp256k1 rejects 0 and
    values >= n: try the next counter then, which never happens in practice)."""
    for i in range(100):
        k = stream("%s key %s %d" % (dh.name, label, i), dh.privlen)
        if dh.name != "secp256k1" or 0 < int.from_bytes(k, "big") < nr.N:
            return k
    raise RuntimeError("no key for %s" % label)


def roles_needed(base, psk_pos):
    """Which keys each side must be given for this pattern."""
    pre_i, pre_r, msgs = nr.pattern_messages(base, psk_pos)
    sent_i = [t for k, m in enumerate(msgs) if k % 2 == 0 for t in m]
    sent_r = [t for k, m in enumerate(msgs) if k % 2 == 1 for t in m]
    return {
        "init_static": "s" in pre_i or "s" in sent_i,
        "resp_static": "s" in pre_r or "s" in sent_r,
        "init_remote_static": "s" in pre_r,
        "resp_remote_static": "s" in pre_i,
        "resp_ephemeral": "e" in sent_r,
        "npsk": len(psk_pos),
        "nmsgs": len(msgs),
    }


def make_vector(protocol, tag, prologue, hs_lens, tr_lens):
    """Runs both roles in the reference and records a vector. hs_lens: one
    payload length per handshake message; tr_lens: transport payload
    lengths (alternating initiator, responder after the handshake, as the
    cacophony format does; one-way patterns send them all one way)."""
    base, psk_pos, dhname, _, _ = nr.parse_protocol(protocol)
    dh = nr.DHS[dhname]
    need = roles_needed(base, psk_pos)
    assert len(hs_lens) == need["nmsgs"], protocol
    label = "%s %s" % (protocol, tag)
    v = {"protocol_name": protocol}
    psks = [stream("%s psk %d" % (label, i), 32).hex() for i in range(need["npsk"])]
    init_s = private_key(dh, label + " init static") if need["init_static"] else None
    resp_s = private_key(dh, label + " resp static") if need["resp_static"] else None
    init_e = private_key(dh, label + " init ephemeral")
    resp_e = private_key(dh, label + " resp ephemeral") if need["resp_ephemeral"] else None

    v["init_prologue"] = prologue.hex()
    v["init_psks"] = psks
    if init_s:
        v["init_static"] = init_s.hex()
    v["init_ephemeral"] = init_e.hex()
    if need["init_remote_static"]:
        v["init_remote_static"] = dh.pubkey(resp_s).hex()
    v["resp_prologue"] = prologue.hex()
    v["resp_psks"] = psks
    if resp_s:
        v["resp_static"] = resp_s.hex()
    if resp_e:
        v["resp_ephemeral"] = resp_e.hex()
    if need["resp_remote_static"]:
        v["resp_remote_static"] = dh.pubkey(init_s).hex()

    ini = nr.HandshakeState(protocol, True, prologue, s=init_s, e=init_e,
                            rs=dh.pubkey(resp_s) if need["init_remote_static"] else None,
                            psks=[bytes.fromhex(p) for p in psks])
    resp = nr.HandshakeState(protocol, False, prologue, s=resp_s, e=resp_e,
                             rs=dh.pubkey(init_s) if need["resp_remote_static"] else None,
                             psks=[bytes.fromhex(p) for p in psks])
    msgs = []
    for i, n in enumerate(hs_lens):
        writer, reader = (ini, resp) if i % 2 == 0 else (resp, ini)
        payload = stream("%s hs payload %d" % (label, i), n)
        ct = writer.write_message(payload)
        assert len(ct) <= MAX_MSG, (protocol, i, len(ct))
        assert reader.read_message(ct) == payload
        msgs.append({"payload": payload.hex(), "ciphertext": ct.hex()})
    assert ini.done() and resp.done()
    assert ini.handshake_hash() == resp.handshake_hash()
    v["handshake_hash"] = ini.handshake_hash().hex()
    i_send, i_recv = ini.split()
    r_send, r_recv = resp.split()
    for j, n in enumerate(tr_lens):
        i = len(hs_lens) + j
        from_ini = ini.one_way or i % 2 == 0
        enc, dec = (i_send, r_recv) if from_ini else (r_send, i_recv)
        payload = stream("%s transport %d" % (label, i), n)
        ct = enc.encrypt_with_ad(b"", payload)
        assert len(ct) <= MAX_MSG
        assert dec.decrypt_with_ad(b"", ct) == payload
        msgs.append({"payload": payload.hex(), "ciphertext": ct.hex()})
    v["messages"] = msgs
    # the vector must replay in the reference exactly as written
    assert nr.run_vector(v) is None, protocol
    return v


def handshake_overheads(protocol):
    """Bytes each handshake message adds to its payload, so a payload can be
    sized to make the message exactly MAX_MSG bytes."""
    base, psk_pos, dhname, _, _ = nr.parse_protocol(protocol)
    _, _, msgs = nr.pattern_messages(base, psk_pos)
    dhlen = nr.DHS[dhname].dhlen
    keyed = False
    out = []
    for k, m in enumerate(msgs):
        n = 0
        for t in m:
            if t == "e":
                n += dhlen
                keyed = keyed or bool(psk_pos)
            elif t == "s":
                n += dhlen + (TAG if keyed else 0)
            else:   # a DH or psk token: a key from here on
                keyed = True
        out.append(n + (TAG if keyed else 0))
    return out


# ------------------------------------------------------------ the sets

SUITE = "secp256k1_ChaChaPoly_SHA256"
CIPHERS = ("ChaChaPoly", "AESGCM")
HASHES = ("SHA256", "SHA512", "BLAKE2s", "BLAKE2b")


def project_set():
    """KK and XK as p11noise uses them, with payloads of many sizes."""
    out = []
    prologues = [b"", b"p11noise/1", b"lightning", stream("long prologue", 1500)]
    tr_lens = [0, 1, 15, 16, 17, 100, 1000, 4096, 65535 - TAG, 5, 7, 3]
    for pat in ("KK", "XK"):
        proto = "Noise_%s_%s" % (pat, SUITE)
        nmsgs = len(nr.PATTERNS[pat][2])
        over = handshake_overheads(proto)
        cases = [
            ("empty", [0] * nmsgs, tr_lens[:6]),
            ("small", [1, 2, 3][:nmsgs], tr_lens[:8]),
            ("ascending", [17, 256, 1001][:nmsgs], tr_lens[4:8]),
            ("large", [1200, 4000, 33000][:nmsgs], tr_lens),
            ("last-empty", [1024] * (nmsgs - 1) + [0], [1, 0, 1, 0]),
            ("first-only", [1500] + [0] * (nmsgs - 1), [2, 2, 2, 2]),
        ]
        # each handshake message once at the largest size a message can have
        for k in range(nmsgs):
            lens = [0] * nmsgs
            lens[k] = MAX_MSG - over[k]
            cases.append(("max message %d" % (k + 1), lens, [0, 1, 2]))
        for n, (tag, hs, tr) in enumerate(cases):
            out.append(make_vector(proto, tag, prologues[n % len(prologues)], hs, tr))
    return out


def psk_variants(base):
    """No psk, each single position, and psk0 together with the last."""
    nmsgs = len(nr.PATTERNS[base][2])
    out = [""] + ["psk%d" % k for k in range(nmsgs + 1)]
    out.append("psk0+psk%d" % nmsgs)
    return out


def matrix_set(dhname, patterns, ciphers, hashes, all_psks=True):
    out = []
    for base in patterns:
        nmsgs = len(nr.PATTERNS[base][2])
        variants = psk_variants(base) if all_psks else ["", "psk0"]
        for mod in variants:
            for c in ciphers:
                for h in hashes:
                    proto = "Noise_%s%s_%s_%s_%s" % (base, mod, dhname, c, h)
                    hs = [(3 * k + 5) % 40 for k in range(nmsgs)]
                    tr = [0, 24, 1, 33] if base not in nr.ONE_WAY else [12, 0, 70]
                    out.append(make_vector(proto, "matrix", b"xcheck matrix", hs, tr))
    return out


def write(path, vectors):
    with open(path, "w") as f:
        json.dump({"vectors": vectors}, f, indent=1)
        f.write("\n")
    print("%s: %d vectors" % (path, len(vectors)))


def main(argv):
    outdir = argv[1] if len(argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "vectors")
    secp = project_set() + matrix_set("secp256k1", list(nr.PATTERNS), CIPHERS, HASHES)
    write(os.path.join(outdir, "secp256k1.json"), secp)
    c448 = matrix_set("448", ["NN", "KK", "XK", "IK", "XX", "X1K1", "N", "X"],
                      CIPHERS, ("SHA256", "BLAKE2b"), all_psks=False)
    write(os.path.join(outdir, "curve448.json"), c448)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
