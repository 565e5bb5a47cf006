#!/usr/bin/env node
// A BOLT #8 peer built on a widely used npm implementation
// (@node-lightning/noise), for interop runs against p11noise over loopback.
//
//   node bolt8_peer.js connect HOST:PORT --key HEX --peer PUBHEX [--count N]
//        [--window W] [--fix-rotation]
//     initiator: sends N messages (at most W unanswered, default 32) while
//     reading their echoes, checks each;
//     prints "ok: N messages each way" or "FAIL: N echoes verified, echo
//     N+1: <error>" and exits 1
//   node bolt8_peer.js listen HOST:PORT --key HEX [--fix-rotation]
//     responder for one connection that echoes every message; prints
//     "listening on PORT", then "echoed N messages" or "FAIL: ..."
//
// --fix-rotation: the package keeps ONE chaining key for both directions
// (NoiseState.ck is read and overwritten by both _rotateSendingKeys and
// _rotateRecievingKeys), while BOLT #8 rotates sk with sck and rk with rck,
// both starting at the handshake's final ck. This flag replaces those two
// methods on the prototype with per-direction chaining keys, to show that
// this one defect is the only thing keeping the package from
// interoperating past the first rotation in the second direction.
//
// Set NODE_PATH to the node_modules folder that holds the package.
"use strict";

const crypto = require("crypto");
const noise = require("@node-lightning/noise");
const lncrypto = require("@node-lightning/crypto");

function usage() {
    process.stderr.write("usage: bolt8_peer.js connect|listen HOST:PORT --key HEX " +
        "[--peer PUBHEX] [--count N] [--fix-rotation]\n");
    process.exit(2);
}

function parseArgs(argv) {
    const a = { count: 3000, window: 32, fix: false };
    a.cmd = argv[0];
    a.addr = argv[1];
    for (let i = 2; i < argv.length; i++) {
        const o = argv[i];
        if (o === "--fix-rotation") a.fix = true;
        else if (o === "--key") a.key = Buffer.from(argv[++i], "hex");
        else if (o === "--peer") a.peer = Buffer.from(argv[++i], "hex");
        else if (o === "--count") a.count = parseInt(argv[++i], 10);
        else if (o === "--window") a.window = parseInt(argv[++i], 10);
        else usage();
    }
    if (!["connect", "listen"].includes(a.cmd) || !a.addr || !a.key) usage();
    if (a.cmd === "connect" && !a.peer) usage();
    const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(a.addr);
    if (!m) usage();
    a.host = m[1];
    a.port = parseInt(m[2], 10);
    if (!(a.host.startsWith("127.") || a.host === "::1" || a.host === "localhost")) {
        process.stderr.write("only loopback addresses\n");
        process.exit(2);
    }
    return a;
}

// Per-direction chaining keys (BOLT #8 "Lightning Message Key Rotation"),
// captured when the handshake ends, before any rotation.
function fixRotation() {
    const S = noise.NoiseState.prototype;
    const capture = (name) => {
        const orig = S[name];
        S[name] = function (...args) {
            const out = orig.apply(this, args);
            this.sck = this.ck;
            this.rck = this.ck;
            return out;
        };
    };
    capture("initiatorAct3");
    capture("receiveAct3");
    S._rotateSendingKeys = function () {
        const r = lncrypto.hkdf(this.sk, 64, this.sck);
        this.sck = r.slice(0, 32);
        this.sk = r.slice(32);
        this.sn = Buffer.alloc(12);
    };
    S._rotateRecievingKeys = function () {
        const r = lncrypto.hkdf(this.rk, 64, this.rck);
        this.rck = r.slice(0, 32);
        this.rk = r.slice(32);
        this.rn = Buffer.alloc(12);
    };
}

// Message i of a run: 0 to 65535 bytes, mostly short; the same sequence
// whoever computes it.
function message(i) {
    const h = crypto.createHash("sha256").update("npm xcheck " + i).digest();
    const sel = h[0] % 16;
    let n;
    if (sel === 0) n = 0;
    else if (sel === 1) n = 65535 - h[1];
    else if (sel < 4) n = 1000 + h.readUInt16BE(1) % 8000;
    else n = h.readUInt16BE(1) % 300;
    const out = Buffer.alloc(n);
    for (let off = 0; off < n; off += 32) h.copy(out, off, 0, Math.min(32, n - off));
    return out;
}

function runConnect(a) {
    const sock = noise.connect({ ls: a.key, rpk: a.peer, host: a.host, port: a.port });
    // The echoes arrive as a byte stream of messages; compare them as one
    // stream and count whole messages by their lengths.
    let verified = 0;
    let pending = Buffer.alloc(0);
    let finished = false;
    const finish = (code, text) => {
        if (finished) return;
        finished = true;
        console.log(text);
        sock.destroy();
        process.exitCode = code;
    };
    let sent = 0;
    let draining = false;
    const pump = () => {
        while (sent < a.count && sent - verified < a.window && !draining) {
            if (!sock.write(message(sent++))) {
                draining = true;
                sock.once("drain", () => {
                    draining = false;
                    pump();
                });
            }
        }
    };
    sock.on("ready", pump);
    sock.on("data", (buf) => {
        pending = Buffer.concat([pending, buf]);
        while (verified < a.count) {
            const want = message(verified);
            if (pending.length < want.length) break;
            if (!pending.subarray(0, want.length).equals(want)) {
                finish(1, `FAIL: ${verified} echoes verified, echo ${verified + 1} differs`);
                return;
            }
            pending = pending.subarray(want.length);
            verified++;
        }
        pump();
        if (verified === a.count)
            finish(0, `ok: ${a.count} messages each way`);
    });
    sock.on("error", (err) => finish(1, `FAIL: ${verified} echoes verified, ` +
        `echo ${verified + 1}: ${err.message}`));
    sock.on("close", () => finish(1, `FAIL: ${verified} echoes verified, then the ` +
        `connection closed`));
}

function runListen(a) {
    const server = noise.createServer({ ls: a.key }, (sock) => {
        let n = 0;
        let done = false;
        const report = (text, code) => {
            if (done) return;
            done = true;
            console.log(text);
            process.exitCode = code;
            server.close();
        };
        sock.on("data", (buf) => {
            n++;
            sock.write(buf);
        });
        sock.on("error", (err) => report(`FAIL: after ${n} messages: ${err.message}`, 1));
        sock.on("end", () => {
            report(`echoed ${n} messages`, 0);
            sock.end();
        });
        sock.on("close", () => report(`echoed ${n} messages`, 0));
    });
    server.on("listening", () => console.log(`listening on ${server.address().port}`));
    server.listen({ host: a.host, port: a.port });
}

const args = parseArgs(process.argv.slice(2));
if (args.fix) fixRotation();
if (args.cmd === "connect") runConnect(args);
else runListen(args);
