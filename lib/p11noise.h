/*
 * p11noise — authenticated, encrypted channels (Noise KK/XK over secp256k1)
 * whose static private keys stay inside a PKCS#11 token.
 *
 * Conventions for every function in this header:
 *  - Functions return an int: P11N_OK (0) or a negative p11n_err. A function
 *    that also reports a count says so in its comment.
 *  - Any function that runs cryptography may also return P11N_ERR_CRYPTO
 *    (the crypto backend failed, its own allocations included: OpenSSL
 *    does not tell those apart) and P11N_ERR_NOMEM; for a handshake,
 *    cipher or transport either one kills the object unless its comment
 *    says the error is retryable.
 *  - Output arguments come last. On error, output pointers are left NULL and
 *    output buffers hold no secret material.
 *  - "Borrowed" means the caller keeps ownership and must keep the object
 *    alive for as long as the receiving object uses it. Objects returned
 *    through `**out` are owned by the caller and freed with the matching
 *    p11n_*_free(), which accepts NULL and wipes all key material.
 *  - Handshake, transport and key objects are not thread-safe: use one from
 *    one thread at a time. Distinct objects may be used concurrently.
 */
#ifndef P11NOISE_H
#define P11NOISE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(P11N_BUILDING) && defined(__GNUC__)
#define P11N_API __attribute__((visibility("default")))
#else
#define P11N_API
#endif

#if defined(__GNUC__)
#define P11N_WARN_UNUSED __attribute__((warn_unused_result))
#define P11N_NONNULL(...) __attribute__((nonnull(__VA_ARGS__)))
#else
#define P11N_WARN_UNUSED
#define P11N_NONNULL(...)
#endif

/* ------------------------------------------------------------------------
 * Versions
 *
 * The library follows semantic versioning: a minor release adds functions
 * or structure fields at the end and never changes an existing one; a
 * major release may. The shared library's SONAME changes only with the
 * major version (libtool -version-info, see configure.ac).
 * ------------------------------------------------------------------------ */

#define P11N_VERSION_MAJOR 0
#define P11N_VERSION_MINOR 1
#define P11N_VERSION_PATCH 0
/** One number to compare with #if: 0xMMmmpp. */
#define P11N_VERSION_NUMBER \
    ((P11N_VERSION_MAJOR << 16) | (P11N_VERSION_MINOR << 8) | P11N_VERSION_PATCH)
/** The handshake's wire version byte (design.md): what both ends must send. */
#define P11N_PROTOCOL_VERSION 0

/** The version of the library actually linked, "MAJOR.MINOR.PATCH" (static
 *  text): compare it with the P11N_VERSION_* macros a program was built
 *  with to detect a mismatch. */
P11N_API const char *p11n_version(void);

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

/** Every error the library reports. Values are stable; groups are spaced so
 *  codes can be added without renumbering. */
typedef enum p11n_err {
    P11N_OK = 0,

    /* usage and resources */
    P11N_ERR_INVALID_ARG = -1,     /* NULL or out-of-range argument */
    P11N_ERR_NOMEM = -2,           /* allocation failed */
    P11N_ERR_BUFFER_TOO_SMALL = -3,/* output buffer cannot hold the result */
    P11N_ERR_STATE = -4,           /* call not valid now (wrong order, or object failed earlier) */
    P11N_ERR_UNSUPPORTED = -5,     /* protocol, pattern or algorithm not supported */
    P11N_ERR_CRYPTO = -6,          /* the crypto backend failed unexpectedly */
    P11N_ERR_MISSING_KEY = -7,     /* pattern needs a key (s, rs, psk) that was not set */
    P11N_ERR_BAD_PRIVKEY = -8,     /* private key bytes are not a valid scalar */
    P11N_ERR_NONCE_EXHAUSTED = -9, /* cipher nonce reached 2^64-1 */
    P11N_ERR_PARSE = -10,          /* malformed text input (hex, key file, peer file) */
    P11N_ERR_FILE_MODE = -11,      /* a key or PIN file is readable by group or others */

    /* handshake and transport input */
    P11N_ERR_SHORT_MESSAGE = -20,  /* handshake message shorter than required */
    P11N_ERR_LONG_MESSAGE = -21,   /* handshake message longer than required */
    P11N_ERR_BAD_VERSION = -22,    /* handshake version byte is not 0 */
    P11N_ERR_BAD_PUBKEY = -23,     /* a public key is not a valid point */
    P11N_ERR_BAD_CIPHERTEXT = -24, /* encrypted static key failed authentication */
    P11N_ERR_BAD_TAG = -25,        /* authentication tag did not verify */
    P11N_ERR_MESSAGE_TOO_LARGE = -26, /* message over P11N_MAX_MESSAGE bytes */
    P11N_ERR_UNKNOWN_PEER = -27,   /* peer's static key is not in the peer store */

    /* PKCS#11 tokens */
    P11N_ERR_URI = -40,            /* malformed key/token URI */
    P11N_ERR_MODULE = -41,         /* PKCS#11 module could not be loaded or initialized */
    P11N_ERR_TOKEN_NOT_FOUND = -42,
    P11N_ERR_PIN_REQUIRED = -43,   /* no PIN in URI, pin-source or callback */
    P11N_ERR_PIN_INCORRECT = -44,
    P11N_ERR_PIN_LOCKED = -45,
    P11N_ERR_KEY_NOT_FOUND = -46,
    P11N_ERR_KEY_NO_DERIVE = -47,  /* key lacks CKA_DERIVE */
    P11N_ERR_KEY_WRONG_CURVE = -48,/* key is not on secp256k1 */
    P11N_ERR_NO_ECDH = -49,        /* token lacks CKM_ECDH1_DERIVE */
    P11N_ERR_TOKEN_REMOVED = -50,  /* device or token removed */
    P11N_ERR_TOKEN = -51,          /* other PKCS#11 failure */
    P11N_ERR_EXISTS = -52,         /* label or identifier already present */
    P11N_ERR_BAD_IDENTIFIER = -53, /* identifier not 1-64 of [A-Za-z0-9._-] */
    P11N_ERR_PUBKEY_MISMATCH = -54,/* identifier present with a different key */
    P11N_ERR_TOKEN_UNAVAILABLE = -55, /* token lost its sessions and is not back yet:
                                         fails fast, retried with a capped backoff */
    P11N_ERR_PIN_FINAL_TRY = -56,  /* token says one more wrong PIN locks it: not trying */
    P11N_ERR_KEY_EXTRACTABLE = -57,/* private key is extractable or not sensitive */
    P11N_ERR_DUPLICATE_KEY = -58,  /* public key already present under another identifier */
    P11N_ERR_PENDING = -59,        /* a token operation must run first: p11n_handshake_pending() */

    /* network */
    P11N_ERR_IO = -70,             /* socket error (see log for errno) */
    P11N_ERR_RESOLVE = -71,        /* name resolution failed */
    P11N_ERR_CONNECT = -72,        /* every address refused or failed */
    P11N_ERR_TIMEOUT = -73,        /* connect, handshake act, proxy or idle deadline */
    P11N_ERR_CLOSED = -74,         /* connection closed by peer */
    P11N_ERR_RESET = -75,          /* connection reset, possibly mid-message */
    P11N_ERR_WOULD_BLOCK = -76,    /* write queue above its high-water mark; retry on writable */
    P11N_ERR_LIMIT = -77,          /* a configured cap (handshakes, queue) was reached */
    P11N_ERR_SHUTDOWN = -78,       /* context is stopping */
    P11N_ERR_REVOKED = -79,        /* the peer's key was removed or replaced (peer key revoked) */
    P11N_ERR_EVICTED = -80,        /* a half-open connection closed to admit a newer one
                                      (handshake table full) */
    P11N_ERR_OVERLOAD = -81,       /* unauthenticated token work queue full: refused
                                      before any token operation */

    /* SOCKS5 proxy */
    P11N_ERR_SOCKS_UNREACHABLE = -90,  /* could not connect to the proxy */
    P11N_ERR_SOCKS_NO_METHOD = -91,    /* proxy accepted none of our methods (0xFF) */
    P11N_ERR_SOCKS_AUTH = -92,         /* username/password rejected */
    P11N_ERR_SOCKS_VERSION = -93,      /* reply with a wrong version byte */
    P11N_ERR_SOCKS_MALFORMED = -94,    /* malformed or truncated reply */
    P11N_ERR_SOCKS_CREDENTIALS = -95,  /* username or password over 255 bytes */
    P11N_ERR_SOCKS_GENERAL = -101,     /* REP 0x01 general SOCKS server failure */
    P11N_ERR_SOCKS_NOT_ALLOWED = -102, /* REP 0x02 connection not allowed by ruleset */
    P11N_ERR_SOCKS_NET_UNREACH = -103, /* REP 0x03 network unreachable */
    P11N_ERR_SOCKS_HOST_UNREACH = -104,/* REP 0x04 host unreachable */
    P11N_ERR_SOCKS_REFUSED = -105,     /* REP 0x05 connection refused by target */
    P11N_ERR_SOCKS_TTL = -106,         /* REP 0x06 TTL expired */
    P11N_ERR_SOCKS_COMMAND = -107,     /* REP 0x07 command not supported */
    P11N_ERR_SOCKS_ATYP = -108,        /* REP 0x08 address type not supported */
    P11N_ERR_SOCKS_REPLY = -109        /* REP code outside 0x00-0x08 */
} p11n_err;

/** A static, human-readable description of an error code (never NULL;
 *  "unknown error" for values outside the enum). */
P11N_API const char *p11n_strerror(int err);

/* ------------------------------------------------------------------------
 * Sizes fixed by the wire protocol
 * ------------------------------------------------------------------------ */

#define P11N_PUBKEY_LEN 33        /* compressed secp256k1 point */
#define P11N_MAX_MESSAGE 65535    /* largest transport message payload */
#define P11N_TAG_LEN 16           /* AEAD tag */
/** Bytes a transport frame adds to a message: 2-byte length + tag, body tag. */
#define P11N_FRAME_OVERHEAD (2 + P11N_TAG_LEN + P11N_TAG_LEN)
#define P11N_MAX_FRAME (P11N_MAX_MESSAGE + P11N_FRAME_OVERHEAD)

/* ------------------------------------------------------------------------
 * Static keys
 *
 * A key is an operation, not bytes: the engine asks the key for DH(k, P).
 * Software keys (development, tests) and PKCS#11 token keys implement the
 * same handle; a token key's private half never leaves the token.
 * ------------------------------------------------------------------------ */

typedef struct p11n_key p11n_key;

/** Make a software static key for DH function `dh_name` ("secp256k1",
 *  "25519", "448") from private key bytes, which are copied (the caller
 *  should wipe its copy). Errors: INVALID_ARG, UNSUPPORTED, BAD_PRIVKEY,
 *  NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_key_from_private(const char *dh_name,
    const uint8_t *priv, size_t len, p11n_key **out);

/** Generate a fresh software static key. Errors: INVALID_ARG, UNSUPPORTED,
 *  CRYPTO, NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_key_generate(const char *dh_name, p11n_key **out);

/** Open a key by URI: "file:PATH" (hex private key; development and tests
 *  only) or an RFC 7512 "pkcs11:" URI naming a private key on a token
 *  (with pin-value, pin-source, module-path or module-name as needed).
 *  Errors: URI; for file: keys PARSE, KEY_NOT_FOUND (no such file), IO,
 *  BAD_PRIVKEY; for pkcs11: keys every error of the token group. */
P11N_API P11N_WARN_UNUSED int p11n_key_load(const char *uri, p11n_key **out);

/** Ask p11n_key_load_ex() to accept a token private key that is
 *  extractable or not sensitive. For development only: such a key can be
 *  read out of the token, which is what the token is there to prevent. */
#define P11N_KEY_DEV_ALLOW_EXTRACTABLE 1u

/** p11n_key_load() with flags (0 or P11N_KEY_DEV_ALLOW_EXTRACTABLE).
 *
 *  A token key keeps the URI as given (wiped when the key is freed): when
 *  the token loses its sessions (pulled out and put back, a network HSM
 *  restarted, CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED, ...) the
 *  next DH opens new sessions, logs in again (pin-value, or pin-source
 *  and the PIN callback asked again), finds the key again by the URI,
 *  checks it is the same key (same public key), and retries once. While
 *  the token stays away, DH fails at once with TOKEN_UNAVAILABLE and the
 *  library tries again after 100 ms, doubling up to every 5 s. A login
 *  the token refused (PIN_INCORRECT, PIN_LOCKED) is never tried again:
 *  that key then fails with the same error until it is loaded anew. The
 *  library never logs in when the token reports a locked PIN or that one
 *  more wrong try would lock it (PIN_FINAL_TRY), at load or later.
 *
 *  fork(): a child does not use its parent's sessions. Load keys after
 *  fork() where you can; a key loaded before it works in the child after
 *  one recovery (module initialized again, new sessions, a new login) on
 *  its first DH. Fork only while no DH is running in another thread.
 *
 *  Errors: those of p11n_key_load(), and FILE_MODE (a file: key readable
 *  by group or others), KEY_EXTRACTABLE (a token key that is extractable
 *  or not sensitive, without the development flag), PIN_FINAL_TRY,
 *  INVALID_ARG (an unknown flag). The key's p11n_key_warning() says when
 *  it was allowed although extractable, or when its public-key object
 *  could be changed without the PIN. */
P11N_API P11N_WARN_UNUSED int p11n_key_load_ex(const char *uri, unsigned flags,
    p11n_key **out);

/** NULL, or one static line saying why this key is weaker than a token
 *  key should be: a development file: key, a token key allowed although
 *  extractable, or a token key whose public-key object can be changed
 *  without the PIN. Valid while the key lives. The event loop logs it at
 *  warning level the first time a listener or connection uses the key. */
P11N_API const char *p11n_key_warning(const p11n_key *key);

/** Copy the key's public key (33 bytes for secp256k1) into `out`; `*outlen`
 *  receives its length. Errors: INVALID_ARG, BUFFER_TOO_SMALL. */
P11N_API int p11n_key_public(const p11n_key *key, uint8_t *out, size_t cap, size_t *outlen);

/** Name of the key's DH function ("secp256k1", "25519", "448"). */
P11N_API const char *p11n_key_dh_name(const p11n_key *key);

/** Free a key (wiping software key bytes; closing token sessions). */
P11N_API void p11n_key_free(p11n_key *key);

/* ------------------------------------------------------------------------
 * Generic Noise handshakes (any supported protocol name)
 *
 * Sans-I/O: the caller moves bytes. Fail closed: after any error the object
 * refuses every further call with P11N_ERR_STATE.
 * ------------------------------------------------------------------------ */

typedef struct p11n_noise p11n_noise;
typedef struct p11n_cipher p11n_cipher;

enum p11n_noise_action {
    P11N_NOISE_WRITE = 1,  /* call p11n_noise_write_message */
    P11N_NOISE_READ = 2,   /* call p11n_noise_read_message */
    P11N_NOISE_SPLIT = 3,  /* handshake complete: call p11n_noise_split */
    P11N_NOISE_FAILED = 4  /* an error occurred; the object is dead */
};

/** Create a handshake for a protocol name such as
 *  "Noise_XK_secp256k1_ChaChaPoly_SHA256" or "Noise_XXpsk3_25519_AESGCM_SHA512".
 *  Errors: INVALID_ARG, UNSUPPORTED (unknown pattern, modifier or algorithm),
 *  NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_noise_new(const char *protocol_name, int initiator,
    p11n_noise **out);

/** Setup calls, valid before p11n_noise_start(). The local static key is
 *  borrowed and must use the protocol's DH function; byte arguments are
 *  copied. set_remote_static gives the peer's key for a pattern with a
 *  pre-message (KK, XK, IK...); for a pattern that transmits the peer's
 *  key it pins it instead: the key that arrives must be this one, or the
 *  read fails with UNKNOWN_PEER; for a pattern in which the peer has no
 *  static key (NN, or NK as responder) it is INVALID_ARG, since nothing
 *  would check it. add_psk appends one 32-byte PSK (used in
 *  the order of the pattern's psk tokens). set_ephemeral fixes the local
 *  ephemeral private key: for test vectors only, never in production.
 *  Errors: INVALID_ARG, STATE, BAD_PUBKEY, BAD_PRIVKEY; any error kills
 *  the object. */
P11N_API int p11n_noise_set_prologue(p11n_noise *hs, const uint8_t *prologue, size_t len);
P11N_API int p11n_noise_set_local_static(p11n_noise *hs, p11n_key *key);
P11N_API int p11n_noise_set_remote_static(p11n_noise *hs, const uint8_t *pub, size_t len);
P11N_API int p11n_noise_add_psk(p11n_noise *hs, const uint8_t *psk, size_t len);
P11N_API int p11n_noise_set_ephemeral(p11n_noise *hs, const uint8_t *priv, size_t len);

/** Initialize: mix the protocol name, prologue and pre-messages. Errors:
 *  STATE, MISSING_KEY (a key the pattern needs was not set). */
P11N_API P11N_WARN_UNUSED int p11n_noise_start(p11n_noise *hs);

/** What the caller must do next (enum p11n_noise_action); P11N_ERR_STATE
 *  before p11n_noise_start() and after a split. */
P11N_API int p11n_noise_action(const p11n_noise *hs);

/** Length of the next message to write or read for a payload of
 *  `payload_len` bytes (fixed by the pattern); 0 when no message is due
 *  or `payload_len` is over 65535 (no Noise message could carry it). */
P11N_API size_t p11n_noise_message_len(const p11n_noise *hs, size_t payload_len);

/** Write the next handshake message carrying `payload` into `out`.
 *  Errors: STATE, BUFFER_TOO_SMALL, MESSAGE_TOO_LARGE (message would exceed
 *  65535 bytes), CRYPTO, and the key's DH errors. */
P11N_API P11N_WARN_UNUSED int p11n_noise_write_message(p11n_noise *hs,
    const uint8_t *payload, size_t payload_len,
    uint8_t *out, size_t cap, size_t *outlen);

/** Read one received handshake message; its payload goes to `payload`.
 *  Errors: STATE, SHORT_MESSAGE, MESSAGE_TOO_LARGE (over 65535 bytes),
 *  BAD_PUBKEY, BAD_CIPHERTEXT (encrypted static key), BAD_TAG (payload),
 *  UNKNOWN_PEER (a pinned remote static differs), BUFFER_TOO_SMALL. On
 *  error the payload buffer is wiped and the object is dead. */
P11N_API P11N_WARN_UNUSED int p11n_noise_read_message(p11n_noise *hs,
    const uint8_t *msg, size_t len,
    uint8_t *payload, size_t cap, size_t *payload_len);

/** The peer's static public key once known. Errors: STATE, BUFFER_TOO_SMALL. */
P11N_API int p11n_noise_remote_static(const p11n_noise *hs, uint8_t *out, size_t cap,
    size_t *outlen);

/** The handshake hash h (valid after the last message). */
P11N_API int p11n_noise_handshake_hash(const p11n_noise *hs, uint8_t *out, size_t cap,
    size_t *outlen);

/** Split into the two transport CipherStates: `send` encrypts this side's
 *  messages, `recv` decrypts the peer's. Either pointer may be NULL if that
 *  direction is not wanted. One-way patterns have no responder-to-initiator
 *  direction: the initiator's `*recv` and the responder's `*send` are set
 *  to NULL. The handshake object may then only be freed. Errors: STATE,
 *  NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_noise_split(p11n_noise *hs, p11n_cipher **send,
    p11n_cipher **recv);

P11N_API void p11n_noise_free(p11n_noise *hs);

/** Plain Noise CipherState transport (no framing, no rotation): encrypt or
 *  decrypt with associated data and the next nonce. `out` needs len + 16
 *  bytes to encrypt, len - 16 to decrypt. encrypt errors: MESSAGE_TOO_LARGE
 *  (over 65519 plaintext bytes, so the message stays within 65535) and
 *  BUFFER_TOO_SMALL, which change nothing (the call may be repeated);
 *  NONCE_EXHAUSTED and CRYPTO (the AEAD failed: `out` wiped), after which
 *  the cipher is dead, since a retry could reuse the nonce with other
 *  input: every later call returns STATE. decrypt errors: BUFFER_TOO_SMALL (nothing
 *  consumed; the call may be repeated), and SHORT_MESSAGE,
 *  MESSAGE_TOO_LARGE, BAD_TAG (out wiped), NONCE_EXHAUSTED, CRYPTO, after
 *  which the cipher is dead: every later call returns STATE. rekey applies
 *  Noise REKEY(); if it fails the cipher is dead. */
P11N_API P11N_WARN_UNUSED int p11n_cipher_encrypt(p11n_cipher *c, const uint8_t *ad,
    size_t adlen, const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *outlen);
P11N_API P11N_WARN_UNUSED int p11n_cipher_decrypt(p11n_cipher *c, const uint8_t *ad,
    size_t adlen, const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *outlen);
P11N_API int p11n_cipher_rekey(p11n_cipher *c);
P11N_API void p11n_cipher_free(p11n_cipher *c);

/* ------------------------------------------------------------------------
 * Transport (BOLT #8 framing and key rotation)
 *
 * Each message is the encrypted 2-byte big-endian length (2 + 16 bytes)
 * followed by the encrypted body (+16). Each direction has its own chaining
 * key and rotates its key every 1000 encryptions (500 messages).
 * ------------------------------------------------------------------------ */

typedef struct p11n_transport p11n_transport;

/** Make a transport from raw keys: chaining key `ck` (both directions start
 *  from it), send key `sk`, receive key `rk`, each 32 bytes, for the hash
 *  and cipher of `protocol_name`. Mostly for tests and vectors; handshakes
 *  produce transports with p11n_handshake_finish(). */
P11N_API P11N_WARN_UNUSED int p11n_transport_new(const char *protocol_name,
    const uint8_t ck[32], const uint8_t sk[32], const uint8_t rk[32],
    p11n_transport **out);

/** Seal one message (at most P11N_MAX_MESSAGE bytes) into one frame of
 *  len + P11N_FRAME_OVERHEAD bytes. Errors: MESSAGE_TOO_LARGE (nothing
 *  written, never truncated), BUFFER_TOO_SMALL, CRYPTO. */
P11N_API P11N_WARN_UNUSED int p11n_transport_seal(p11n_transport *t,
    const uint8_t *msg, size_t len, uint8_t *out, size_t cap, size_t *outlen);

/** Feed received bytes in chunks of any size. Consumes bytes until one
 *  whole message is decrypted or input runs out; `*consumed` says how many
 *  were used. Returns 1 when a message is ready (`*msg`, `*msglen` point
 *  into the transport's buffer, valid until the next call), 0 when more
 *  input is needed, or a negative error: BAD_TAG (the transport is then
 *  dead); NOMEM when the receive buffer cannot grow (retryable: the
 *  transport stays usable; feed again from `in + *consumed`); NOMEM or
 *  CRYPTO from the key rotation every 500 messages (the transport is then
 *  dead: a rotation half done cannot be undone). Call again with the remaining bytes after a message.
 *  The receive buffer is allocated on first use and grows to the largest
 *  frame seen; no allocation happens per message after that. */
P11N_API P11N_WARN_UNUSED int p11n_transport_feed(p11n_transport *t,
    const uint8_t *in, size_t len, size_t *consumed,
    const uint8_t **msg, size_t *msglen);

P11N_API void p11n_transport_free(p11n_transport *t);

/* ------------------------------------------------------------------------
 * p11noise handshakes: KK or XK over secp256k1 with the wire framing
 * (version byte 0, empty payloads, fixed act sizes), ending in a transport.
 * ------------------------------------------------------------------------ */

typedef struct p11n_handshake p11n_handshake;

/* Grows like the option structures (see p11n_ctx_options): make it with
 * P11N_HANDSHAKE_CONFIG_INIT, or set `size` to its sizeof. */
typedef struct p11n_handshake_config {
    size_t size;                  /* sizeof(p11n_handshake_config): P11N_HANDSHAKE_CONFIG_INIT */
    const char *pattern;          /* "KK" (default when NULL) or "XK" */
    const uint8_t *prologue;      /* NULL: "p11noise/1" for KK, "lightning" for XK */
    size_t prologue_len;
    p11n_key *local;              /* borrowed; required */
    /* Initiator: the responder's key (required). KK responder: candidate
     * initiator keys, tried in order (at least one). XK responder: the
     * initiator keys it accepts (none: any key; the caller then decides
     * on p11n_handshake_remote()). */
    const uint8_t (*remote)[P11N_PUBKEY_LEN];
    size_t nremote;
    const uint8_t *test_ephemeral;/* fixed ephemeral private key: vectors only */
    unsigned flags;               /* P11N_HS_* */
} p11n_handshake_config;
#define P11N_HANDSHAKE_CONFIG_INIT { .size = sizeof(p11n_handshake_config) }

/* A step that needs the token (p11n_handshake_token_step() is 1) does not
 * block: p11n_handshake_write/read return P11N_ERR_PENDING, the caller
 * runs p11n_handshake_pending_run() on any thread, then resumes with
 * p11n_handshake_resume(). Steps without token work never return
 * PENDING. Without the flag every step blocks on the token. */
#define P11N_HS_ASYNC_TOKEN 1u

/** Start a handshake as initiator / responder. The config is copied (keys
 *  stay borrowed). Errors: INVALID_ARG (including a `size` of 0, or
 *  non-zero bytes past what this library knows), UNSUPPORTED, MISSING_KEY,
 *  BAD_PUBKEY (a configured remote key is not a valid point), NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_handshake_initiate(const p11n_handshake_config *cfg,
    p11n_handshake **out);
P11N_API P11N_WARN_UNUSED int p11n_handshake_respond(const p11n_handshake_config *cfg,
    p11n_handshake **out);

/** Bytes the next act needs from the peer (0 when it is our turn to write
 *  or the handshake is done). */
P11N_API size_t p11n_handshake_want(const p11n_handshake *hs);

/** Write our next act into `out`. Errors: STATE, BUFFER_TOO_SMALL, token
 *  and DH errors; PENDING with P11N_HS_ASYNC_TOKEN (see there). */
P11N_API P11N_WARN_UNUSED int p11n_handshake_write(p11n_handshake *hs, uint8_t *out,
    size_t cap, size_t *outlen);

/** Read exactly one act from the peer. Errors: SHORT_MESSAGE, LONG_MESSAGE,
 *  BAD_VERSION, BAD_PUBKEY, BAD_CIPHERTEXT, BAD_TAG, UNKNOWN_PEER, token
 *  errors. Fail closed. A KK responder reports any act-1 tag failure as
 *  UNKNOWN_PEER: it cannot tell an initiator key it does not know from a
 *  corrupted act. An XK responder whose act-3 key is not in its list fails
 *  with UNKNOWN_PEER; the refused key is not reported (p11n_handshake_remote
 *  returns STATE): a caller that wants to name refused keys configures no
 *  list and decides itself once the handshake is done. */
P11N_API P11N_WARN_UNUSED int p11n_handshake_read(p11n_handshake *hs, const uint8_t *in,
    size_t len);

/** 1 when the handshake has completed, 0 otherwise. */
P11N_API int p11n_handshake_done(const p11n_handshake *hs);

typedef struct p11n_handshake_op p11n_handshake_op;

/** After P11N_ERR_PENDING: the operation to run (owned by the handshake,
 *  valid until it is resumed or freed); NULL when nothing is pending. */
P11N_API p11n_handshake_op *p11n_handshake_pending(p11n_handshake *hs);

/** Runs the pending step -- its token operations and the rest of the act
 *  -- on the calling thread, blocking on the token. Any thread may call it
 *  once per PENDING; the caller must not touch the handshake meanwhile and
 *  must order the run before p11n_handshake_resume (a queue, a pipe, a
 *  join). Returns the step's result (also returned by the resume);
 *  INVALID_ARG for NULL, STATE if it already ran. */
P11N_API int p11n_handshake_pending_run(p11n_handshake_op *op);

/** Completes the call that returned PENDING, as it would have returned:
 *  for a write the act goes to `out` (`cap` bytes, *outlen its length);
 *  for a read out/outlen may be NULL and *outlen is 0. PENDING while the
 *  operation has not run; BUFFER_TOO_SMALL leaves it pending; STATE when
 *  nothing is pending. */
P11N_API P11N_WARN_UNUSED int p11n_handshake_resume(p11n_handshake *hs, uint8_t *out,
    size_t cap, size_t *outlen);

/** 1 when the next p11n_handshake_write or p11n_handshake_read will use a
 *  slow (token) local key, so an event loop runs it off its own thread;
 *  0 when it needs no token operation (KK responder act 2, XK initiator
 *  act 1, XK responder acts 2 and 3, everything once done), so it can run
 *  in place. A KK responder's act 1 counts as token work. */
P11N_API int p11n_handshake_token_step(const p11n_handshake *hs);

/** The authenticated peer's static key (33 bytes), once the handshake is
 *  done (p11n_handshake_done() is 1): it is authenticated only then.
 *  Errors: INVALID_ARG, STATE (not done yet, including an initiator
 *  before its final act, or failed, including an XK responder that
 *  refused the key). */
P11N_API int p11n_handshake_remote(const p11n_handshake *hs, uint8_t out[P11N_PUBKEY_LEN]);

/** Turn a completed handshake into a transport. Errors: STATE, NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_handshake_finish(p11n_handshake *hs,
    p11n_transport **out);

P11N_API void p11n_handshake_free(p11n_handshake *hs);

/* ------------------------------------------------------------------------
 * Tokens and the ceremony (section owned by pkcs11/)
 *
 * A ceremony entry pairs a peer identifier (1-64 characters of
 * [A-Za-z0-9._-]) with its 33-byte public key. Entries live as objects on
 * the token and in text files of "IDENTIFIER PUBHEX" lines ('#' comments
 * and blank lines allowed).
 * ------------------------------------------------------------------------ */

#define P11N_MAX_IDENTIFIER 64

typedef struct p11n_peer_entry {
    char id[P11N_MAX_IDENTIFIER + 1];
    uint8_t pub[P11N_PUBKEY_LEN];
} p11n_peer_entry;

/** Application PIN source, asked when a pkcs11: URI has neither pin-value
 *  nor pin-source. Write a NUL-terminated PIN into `pin` (cap bytes) and
 *  return 0, or return non-zero to refuse. `token_uri` never holds a PIN. */
typedef int (*p11n_pin_callback)(const char *token_uri, char *pin, size_t cap, void *arg);
P11N_API void p11n_set_pin_callback(p11n_pin_callback cb, void *arg);

/** Free an array the library returned (p11n_peers_parse,
 *  p11n_ceremony_read, p11n_ceremony_scan); NULL is accepted. Use this
 *  rather than free(): the program and the library may not share one
 *  allocator (a binding, another C runtime). */
P11N_API void p11n_free(void *p);

/** 1 if `id` is a valid identifier, 0 otherwise. */
P11N_API int p11n_identifier_valid(const char *id);

/** Parse ceremony text. On success `*entries` (free with p11n_free()) holds `*n`
 *  entries. Errors: PARSE, BAD_IDENTIFIER, BAD_PUBKEY, EXISTS (duplicate
 *  identifier); `*bad_line` (1-based) names the offending line. */
P11N_API P11N_WARN_UNUSED int p11n_peers_parse(const char *text, size_t len,
    p11n_peer_entry **entries, size_t *n, size_t *bad_line);

/** p11n_peers_parse, and on error one line in `why` (cap bytes, cut to
 *  fit; may be NULL) saying what is wrong with line `*bad_line`: a byte
 *  order mark, a NUL byte, one field only, an extra field, a bad
 *  identifier, a bad character in the key, an uncompressed key, a key
 *  of the wrong length, not a compressed point or not on the curve, an
 *  identifier already used (naming its first line). The key is never
 *  quoted: it may be a private key pasted by mistake. Same errors. */
P11N_API P11N_WARN_UNUSED int p11n_peers_parse_why(const char *text, size_t len,
    p11n_peer_entry **entries, size_t *n, size_t *bad_line, char *why, size_t cap);

/** The 1-based line of entry `index` of text that p11n_peers_parse
 *  accepted (0 if there is no such entry): turns an entry index reported
 *  by p11n_ceremony_write back into a line number. */
P11N_API size_t p11n_peers_line(const char *text, size_t len, size_t index);

/** One line describing the calling thread's last token error: the URI
 *  (never a PIN), and the failing PKCS#11 call with its CKR_ name where
 *  there is one, e.g. "pkcs11:token=hsm;object=k: C_Login: token PIN
 *  incorrect (CKR_PIN_INCORRECT)". Empty after a success. Valid until the
 *  thread's next token call. */
P11N_API const char *p11n_token_last_error(void);

/** A URI as messages show it (the form p11n_token_last_error and the PIN
 *  callback use): for "pkcs11:" (in any case, after whitespace, as
 *  p11-kit reads it), percent-escapes resolved where the byte is
 *  printable ASCII other than space ; ? & = % # (which stay escaped, so
 *  the attributes read the same), pin-value removed wherever and however
 *  spelled, with what follows it up to the next attribute p11-kit knows
 *  (a PIN may hold a raw '&'), pin-source and the rest kept; p11-kit
 *  reads no PIN from the result. Any other text as it is. In both, a
 *  byte outside printable ASCII (a control byte, DEL, UTF-8) is written
 *  as %XX, never raw. Writes at most cap bytes including the NUL (cap 0:
 *  nothing) and returns the length of the whole text, as snprintf does:
 *  a result >= cap means it was cut. `uri` NULL: "". */
P11N_API size_t p11n_uri_display(const char *uri, char *out, size_t cap);

/** Generate a secp256k1 key pair on the token named by `token_uri`, with
 *  CKA_LABEL `label`; `pub` receives its public key. Errors: EXISTS (label
 *  taken), and the token errors. */
P11N_API P11N_WARN_UNUSED int p11n_token_keygen(const char *token_uri, const char *label,
    uint8_t pub[P11N_PUBKEY_LEN]);

/** The trusted peers of a token's ceremony: p11n_ceremony_scan() without
 *  the ignored objects. `*entries` is freed with p11n_free(). */
P11N_API P11N_WARN_UNUSED int p11n_ceremony_read(const char *token_uri,
    p11n_peer_entry **entries, size_t *n);

/** An object with the ceremony's CKA_ID prefix that was not trusted. */
typedef struct p11n_ceremony_ignored {
    char id[4 * P11N_MAX_IDENTIFIER + 1]; /* the CKA_ID after the prefix, non-printable
                                             bytes escaped as \xNN, cut to fit */
    char reason[128];             /* why, e.g. "public object (CKA_PRIVATE false):
                                     creatable without the PIN" */
} p11n_ceremony_ignored;

/** Read the ceremony from a logged-in session and sort it: `*entries`
 *  gets the trusted peers (objects with CKA_PRIVATE true, CKA_MODIFIABLE
 *  false, a valid identifier and point, unambiguous), `*ignored` every
 *  other object with the prefix and the reason. Both arrays are freed
 *  with p11n_free() (either may be NULL with its count 0). Errors: the token
 *  errors, NOMEM; an ignored object is not an error. */
P11N_API P11N_WARN_UNUSED int p11n_ceremony_scan(const char *token_uri,
    p11n_peer_entry **entries, size_t *n, p11n_ceremony_ignored **ignored,
    size_t *nignored);

/** Write entries as private, unmodifiable ceremony objects, all or
 *  nothing: every entry is checked first (an identifier already on the
 *  token with another key is PUBKEY_MISMATCH, and one held by an ignored
 *  object EXISTS, unless `replace`, which then destroys those objects
 *  once the new ones exist); on error `*bad_index` names the entry
 *  (SIZE_MAX when the error concerns none) and nothing was written. An
 *  entry already on the token, trusted, with the same key is left as it
 *  is. Errors: BAD_IDENTIFIER, BAD_PUBKEY, EXISTS (repeated identifier, or
 *  an ignored object without `replace`), DUPLICATE_KEY (a key given twice,
 *  or already on the token under an identifier that is not replaced),
 *  PUBKEY_MISMATCH, and the token errors. */
P11N_API P11N_WARN_UNUSED int p11n_ceremony_write(const char *token_uri,
    const p11n_peer_entry *entries, size_t n, int replace, size_t *bad_index);

/** Remove a peer: every object whose CKA_ID is the ceremony prefix and
 *  `identifier`, ignored ones included. Errors: BAD_IDENTIFIER,
 *  KEY_NOT_FOUND, token errors. */
P11N_API P11N_WARN_UNUSED int p11n_ceremony_remove(const char *token_uri,
    const char *identifier);

/* ------------------------------------------------------------------------
 * Networking (section owned by the event loop)
 *
 * A context owns one event loop (epoll on Linux, else poll(); see
 * p11n_ctx_options.loop), a peer store, and the listeners and connections
 * created from it. Threads: every function
 * below except p11n_stop() must be called from the thread that runs the
 * context's loop, and every callback runs on that thread. No call blocks:
 * names are resolved with c-ares inside the loop, connects are
 * non-blocking, and handshake steps that use a token key run on worker
 * threads (one PKCS#11 operation at a time each) and complete through a
 * wake-up fd, so a slow token never stalls other connections. The
 * exceptions are setup calls that talk to a token themselves
 * (p11n_peers_load_token, p11n_ceremony_input with P11N_PEER_TO_TOKEN)
 * and p11n_ctx_free, which waits for running token operations: make them
 * before running the loop, or accept that the loop waits for them.
 *
 * Identity is the peer's static key, never its address: reconnects
 * resolve the name again, and a listener behind a SOCKS5 proxy sees every
 * peer come from the proxy.
 * ------------------------------------------------------------------------ */

#include <poll.h>

typedef struct p11n_ctx p11n_ctx;
typedef struct p11n_listener p11n_listener;
typedef struct p11n_conn p11n_conn;

/** Log levels; a level includes the ones below it. */
enum p11n_log_level {
    P11N_LOG_ERROR = 1,
    P11N_LOG_WARN = 2,
    P11N_LOG_INFO = 3,  /* every connection attempt, handshake result, close */
    P11N_LOG_DEBUG = 4  /* each address tried, each act, worker hand-offs */
};

/** Receives one log line (no trailing newline, no timestamp), valid only
 *  during the call; called on the thread that logs (the loop thread, or
 *  the caller of p11n_ctx_new and the peer-store calls). Lines never hold
 *  keys, secrets or PINs. */
typedef void (*p11n_log_callback)(int level, const char *line, void *arg);

/** How the loop waits for its fds. Both are level-triggered and behave
 *  the same; epoll costs in proportion to the fds that are ready, poll()
 *  in proportion to the fds watched (milliseconds per wait at 10,000
 *  connections). */
enum p11n_loop_backend {
    P11N_LOOP_DEFAULT = 0,  /* epoll where available, unless the environment
                               variable P11N_LOOP is "poll" (or "epoll") */
    P11N_LOOP_POLL = 1,     /* poll(): portable */
    P11N_LOOP_EPOLL = 2     /* epoll (Linux); elsewhere p11n_ctx_new fails with UNSUPPORTED */
};

/** Context options. Zero means "the default" for every field, so
 *  `p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;` is a valid
 *  configuration (and so is NULL for the options). */
struct p11n_log_record;          /* defined under "structured logging" */

typedef struct p11n_ctx_options {
    size_t size;                  /* sizeof(p11n_ctx_options): P11N_CTX_OPTIONS_INIT */
    /* Logging: nothing unless asked. A callback gets the lines up to
     * log_level (0: P11N_LOG_INFO); without one, a non-zero log_level
     * prints timestamped lines on stderr, and 0 prints nothing. */
    p11n_log_callback log;
    void *log_arg;
    int log_level;
    unsigned max_handshakes;      /* incoming handshakes in progress, all listeners (1024;
                                     above the ~400 acts max_unauth_token_ops queues).
                                     When full, the connection that has waited longest
                                     for its peer's act is closed (EVICTED) to admit the
                                     new one; one whose act is with the token is not
                                     evictable, and with none evictable the new one is
                                     refused (LIMIT) */
    unsigned max_token_ops;       /* token derivations queued or running for outgoing
                                     connections (256) */
    unsigned workers;             /* worker threads for token keys, one token session
                                     each (4) */
    unsigned act_timeout_ms;      /* deadline for each handshake act, and for a graceful
                                     close to flush (10000). Established, an unfinished
                                     transport message with no byte of it received for
                                     this long closes the connection (TIMEOUT); a slow
                                     link that keeps moving is never cut. A peer that
                                     does not read: stall_timeout_ms */
    unsigned connect_timeout_ms;  /* per address tried, and for a proxy's CONNECT reply,
                                     which waits for the proxy to reach the target
                                     (10000) */
    unsigned idle_timeout_ms;     /* close established connections idle this long (0: never) */
    size_t write_high_water;      /* queued bytes at which p11n_send would block (1 MiB) */
    const char *token_uri;        /* token for P11N_PEER_TO_TOKEN (copied; may be NULL) */
    const char *socks5;           /* SOCKS5 proxy "[USER:PASS@]HOST:PORT" for every
                                     p11n_connect without its own (copied; NULL: direct) */
    const char *dns_servers;      /* name servers "IP[:PORT],[IPV6]:PORT,..." instead of
                                     the system's (/etc/hosts is still read first;
                                     NULL: the system's) */
    int loop;                     /* enum p11n_loop_backend (0: epoll on Linux) */
    /* Logging as records (struct p11n_log_record, below) instead of
     * lines: when set, `log` is not called; log_arg is its argument and
     * log_level applies (0: P11N_LOG_INFO). */
    void (*log_record)(const struct p11n_log_record *rec, void *arg);

    /* Limits against hostile load (SECURITY.md, "Limits"). No limit looks
     * at source addresses: behind a proxy every peer has the same one. */
    unsigned act1_timeout_ms;     /* deadline for an incoming connection's first act and
                                     for the proxy's own answers to an outgoing
                                     connection (SOCKS5 method and authentication
                                     replies) (2000; never longer than act_timeout_ms,
                                     resp. connect_timeout_ms) */
    unsigned max_unauth_token_ops;/* token derivations queued or running for incoming,
                                     not yet authenticated acts (512); a KK act counts
                                     1 + its candidates when it opens a batch of its
                                     key, 1 when it joins one (SECURITY.md); when full,
                                     the newest act is refused (OVERLOAD) before any
                                     token operation */
    unsigned unauth_workers;      /* worker threads that may run unauthenticated work at
                                     once (workers - 1, at least 1); the others run only
                                     work of outgoing connections */
    unsigned max_established;     /* established connections, all listeners and
                                     outgoing ones together (16384); closing ones count
                                     until closed. A handshake that completes beyond it
                                     ends with LIMIT; an incoming connection arriving
                                     while it is reached is refused at once, before any
                                     token work */
    int keepalive_idle_s;         /* TCP keepalive on every connection's socket (the
                                     proxy's when tunnelled): idle seconds before the
                                     first probe (0: 60; -1: off). A peer gone without
                                     a reset is dropped after idle + interval * count */
    unsigned keepalive_interval_s;/* seconds between probes (10) */
    unsigned keepalive_count;     /* unanswered probes before the kernel drops the
                                     connection (6) */
    unsigned stall_timeout_ms;    /* an established connection whose peer takes none of
                                     the bytes queued for it for this long is closed
                                     (TIMEOUT, "it does not read") (120000). Long,
                                     because a peer pausing its reads
                                     (p11n_conn_pause_read) looks the same from here */
    unsigned log_refusals_per_s;  /* lines per second per listener about refused, evicted
                                     or failed incoming connections before they are only
                                     counted (5), and as many about accepted ones; what
                                     was not logged is summarised by reason every 10 s
                                     ("N connections refused in the last 10 s ...") */
} p11n_ctx_options;

/* Option structures that can grow. Each starts with `size`, which the
 * caller sets to the sizeof the structure it was compiled with: start
 * from the structure's _INIT macro (every other field zero, "the
 * default") and set fields by name. The library reads `size` bytes: a
 * program built against an older header (smaller size) gets the
 * defaults for the fields it does not know; a program built against a
 * newer header (larger size) is accepted as long as every byte the
 * library does not know is zero, and refused with INVALID_ARG otherwise
 * (it asks for something this library cannot do). size 0 (a structure
 * not initialised with the macro) is INVALID_ARG. */
#define P11N_CTX_OPTIONS_INIT { .size = sizeof(p11n_ctx_options) }

/** Create a context; `opts` may be NULL (all defaults). Errors:
 *  INVALID_ARG (including a malformed socks5 or dns_servers, or an
 *  unknown loop), UNSUPPORTED (P11N_LOOP_EPOLL without epoll),
 *  SOCKS_CREDENTIALS (proxy username or password over 255 bytes), NOMEM,
 *  IO (no wake-up or epoll fd), RESOLVE (the resolver cannot start). */
P11N_API P11N_WARN_UNUSED int p11n_ctx_new(const p11n_ctx_options *opts, p11n_ctx **out);

/** Free a context: closes every listener and connection at once (queued
 *  messages are dropped; no callback runs), waits for running token
 *  operations, frees the peer store. Accepts NULL. To close connections
 *  gracefully, p11n_close() them and run the loop until their final
 *  `closed` callback first. */
P11N_API void p11n_ctx_free(p11n_ctx *ctx);

/* ---- peer store ----
 * The context's peers: identifier -> static public key, from the ceremony.
 * Initiators name their peer by identifier; responders report the
 * identifier of the authenticated initiator. */

#define P11N_PEER_REPLACE 1u   /* an identifier already present gets the new key */
#define P11N_PEER_TO_TOKEN 2u  /* also write the entry to the context's token_uri */

/** Add one peer. Adding an identical entry again is a no-op. Errors:
 *  INVALID_ARG (NULL, or TO_TOKEN without a token_uri), BAD_IDENTIFIER,
 *  BAD_PUBKEY, PUBKEY_MISMATCH (identifier present with another key and no
 *  REPLACE), DUPLICATE_KEY (the key is already stored under another
 *  identifier: a peer's identity must be unambiguous), NOMEM, and p11n_ceremony_write's errors (then nothing was
 *  added). */
P11N_API P11N_WARN_UNUSED int p11n_ceremony_input(p11n_ctx *ctx,
    const uint8_t pub[P11N_PUBKEY_LEN], const char *identifier, unsigned flags);

/** Add every peer of a ceremony file ("IDENTIFIER PUBHEX" lines), all or
 *  nothing. Returns the number of entries read, or: IO (unreadable file),
 *  p11n_peers_parse's errors, PUBKEY_MISMATCH, DUPLICATE_KEY, NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_peers_load_file(p11n_ctx *ctx, const char *path);

/** Replace the whole peer store with the token's current ceremony (its
 *  trusted objects; each ignored one is logged at warning level as
 *  "ceremony object ID ignored: REASON"): the reload call, valid at any
 *  time, e.g. after `ceremony import` or `ceremony remove` on the token or
 *  on SIGHUP. The swap is atomic: on error the store is unchanged. Peers
 *  that left or whose key changed are then revoked as by
 *  p11n_peer_remove(), inside this call (their `closed` callbacks run
 *  before it returns). Talks to the token: see the threads note above.
 *  Returns the number of peers loaded, or INVALID_ARG, p11n_ceremony_scan's
 *  errors, BAD_IDENTIFIER, BAD_PUBKEY or EXISTS (an entry the store cannot
 *  hold), NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_peers_load_token(p11n_ctx *ctx, const char *token_uri);

/** Remove a peer. Listeners consult the store for every handshake, so
 *  the key is refused from the next one on, and established connections
 *  authenticated with it are closed (reason REVOKED, logged as "peer key
 *  revoked"), as are outgoing handshakes to it in progress; their
 *  `closed` callbacks run inside this call. A replacement through
 *  p11n_ceremony_input(..., P11N_PEER_REPLACE) revokes the old key the
 *  same way. Connections made to a peer named by key (p11n_connect with
 *  hex) are not bound to the store and stay. Errors: INVALID_ARG,
 *  UNKNOWN_PEER (no such identifier). */
P11N_API int p11n_peer_remove(p11n_ctx *ctx, const char *identifier);

/** The key the store holds for `identifier` (the ceremony's, as loaded
 *  now: after a reload, the new one), copied to `out`. Loop thread, like
 *  every store call. Errors: INVALID_ARG (a NULL argument), UNKNOWN_PEER
 *  (no such identifier; `out` untouched). */
P11N_API P11N_WARN_UNUSED int p11n_peer_key(const p11n_ctx *ctx, const char *identifier,
    uint8_t out[P11N_PUBKEY_LEN]);

/* ---- callbacks ----
 * `arg` is the callbacks' arg, or the connection's own after
 * p11n_conn_set_arg(). Any p11n_* call on the connection is allowed inside
 * a callback. Every string and buffer a callback receives (`peer`, `msg`,
 * `text`, a log `line`) belongs to the library and is valid only during
 * the call: copy what you keep. Callbacks run on the loop thread. */
typedef struct p11n_callbacks {
    /** Handshake done. `peer` is the authenticated peer's identifier, or
     *  its public key in hex when it is not in the peer store (an
     *  initiator that named its peer by key); valid during the call
     *  (p11n_conn_peer_id() and p11n_conn_peer_key() give it later). */
    void (*established)(p11n_conn *conn, const char *peer, void *arg);
    /** One message. `msg` points into the connection's decoder and is
     *  valid only during the call. */
    void (*message)(p11n_conn *conn, const uint8_t *msg, size_t len, void *arg);
    /** The write queue has drained after p11n_send returned WOULD_BLOCK. */
    void (*writable)(p11n_conn *conn, void *arg);
    /** The connection ended or an attempt failed: `reason` is P11N_OK
     *  after p11n_close, else a negative p11n_err; `text` says what
     *  happened (valid during the call only). `final` 0: a reconnect is scheduled and the handle stays
     *  valid. `final` 1: the last callback; the handle is freed when it
     *  returns. */
    void (*closed)(p11n_conn *conn, int reason, const char *text, int final, void *arg);
    void *arg;
} p11n_callbacks;

/** Handshake options shared by listeners and connections. */
typedef struct p11n_channel_options {
    p11n_key *key;                /* local static key, borrowed; required */
    const char *pattern;          /* "KK" (NULL) or "XK" */
    const uint8_t *prologue;      /* NULL: "p11noise/1" (KK), "lightning" (XK); copied */
    size_t prologue_len;
    p11n_callbacks cb;
} p11n_channel_options;

/* ---- listening ---- */

#define P11N_MAX_KK_CANDIDATES 16 /* initiator keys a KK listener may try per act */

typedef struct p11n_listen_options {
    size_t size;                  /* sizeof(p11n_listen_options): P11N_LISTEN_OPTIONS_INIT */
    p11n_channel_options ch;
    /* Identifiers accepted (each must be in the peer store now). None:
     * every peer in the store. The store is consulted at every handshake,
     * never copied: a KK listener takes its candidates (at most
     * P11N_MAX_KK_CANDIDATES; an identifier that has left the store is
     * skipped) when the handshake begins and tries them in order, each
     * try costing token operations; an XK listener checks the initiator's
     * key when the handshake ends. */
    const char *const *peers;
    size_t npeers;
    unsigned max_handshakes;      /* handshakes in progress on this listener (0: the context's) */
    unsigned max_established;     /* established connections from this listener (0: only
                                     the context's cap); as the context's cap, checked
                                     at accept and when a handshake completes */
} p11n_listen_options;

#define P11N_LISTEN_OPTIONS_INIT { .size = sizeof(p11n_listen_options) }

/** Listen on a numeric IPv4 or IPv6 address ("127.0.0.1", "::1", "::");
 *  port 0 picks a free port (see p11n_listener_port). Errors: INVALID_ARG
 *  (bad address, options, or a KK listener with an empty store),
 *  UNSUPPORTED (pattern), UNKNOWN_PEER (a listed identifier is not in the
 *  store), LIMIT (more than P11N_MAX_KK_CANDIDATES), IO (bind/listen; the
 *  log has errno), NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_listen(p11n_ctx *ctx, const char *ip, uint16_t port,
    const p11n_listen_options *opts, p11n_listener **out);

/** The port the listener is bound to. */
P11N_API uint16_t p11n_listener_port(const p11n_listener *l);

/** Stop accepting and free the listener. Connections it accepted go on. */
P11N_API void p11n_listener_close(p11n_listener *l);

/* ---- connecting ---- */

typedef struct p11n_connect_options {
    size_t size;                  /* sizeof(p11n_connect_options): P11N_CONNECT_OPTIONS_INIT */
    p11n_channel_options ch;
    /* SOCKS5 proxy "[USER:PASS@]HOST:PORT" ("[V6]:PORT" too); NULL: the
     * context's, if any. The target name is passed to the proxy
     * unresolved; the connect timeout covers the proxy phase too. */
    const char *socks5;
    int reconnect;                /* 1: after a failure or close, try again */
    unsigned backoff_min_ms;      /* first retry delay (500); doubles per failure */
    unsigned backoff_max_ms;      /* delay cap (30000); each delay gets random jitter */
} p11n_connect_options;

#define P11N_CONNECT_OPTIONS_INIT { .size = sizeof(p11n_connect_options) }

/** Start connecting to `host` (name or numeric address) on `port`, and
 *  handshake with `peer`: an identifier in the peer store or a public key
 *  in hex (66 digits). An identifier binds the connection to the store:
 *  each attempt takes its current key (an attempt after the identifier
 *  was removed fails with UNKNOWN_PEER), and removing or replacing it
 *  closes the connection with REVOKED. A key in hex is trusted as given:
 *  store changes do not affect that connection. Returns at once; progress comes through the
 *  callbacks (a failed attempt calls `closed`, with RESOLVE, CONNECT,
 *  TIMEOUT, a SOCKS_* error for the proxy phase, or the handshake's
 *  error). The connection handle is owned by the context: it stays valid
 *  until the final `closed` callback returns. Errors: INVALID_ARG
 *  (including a malformed socks5), UNSUPPORTED, UNKNOWN_PEER, BAD_PUBKEY,
 *  SOCKS_CREDENTIALS, NOMEM. */
P11N_API P11N_WARN_UNUSED int p11n_connect(p11n_ctx *ctx, const char *host, uint16_t port,
    const char *peer, const p11n_connect_options *opts, p11n_conn **out);

/* ---- messages ---- */

/** Queue one message (0 to P11N_MAX_MESSAGE bytes); it is sealed at once
 *  into the connection's write buffer (the caller's buffer is free when
 *  this returns) and written when the loop next runs. Errors: INVALID_ARG,
 *  MESSAGE_TOO_LARGE (nothing queued, never truncated), STATE (not
 *  established, or closing), WOULD_BLOCK (queue at its high-water mark:
 *  `writable` fires when it drains), NOMEM, CRYPTO. */
P11N_API P11N_WARN_UNUSED int p11n_send(p11n_conn *conn, const uint8_t *msg, size_t len);

/** Close gracefully: deliver no more messages, flush the queued ones
 *  (within the act timeout), then shut down the sending side so the peer
 *  reads every message and then the end of the stream, and discard what
 *  the peer still sends until it closes too, at most P11N_LINGER_MS (or
 *  the act timeout, if shorter): closing a socket with unread bytes would
 *  send a reset, which can destroy messages the peer has not read yet.
 *  `closed` follows with reason P11N_OK and final 1 (TIMEOUT, RESET or IO
 *  if the queue could not be flushed). Cancels any reconnect. Valid in any
 *  state; a second call is a no-op. */
#define P11N_LINGER_MS 2000
P11N_API void p11n_close(p11n_conn *conn);

/** Stop (`pause` 1) or resume (0) reading from an established connection:
 *  no `message` callback runs while paused, from the call on (messages
 *  already received stay queued in order, up to one read's worth), and
 *  the peer's sending is held back by TCP flow control. The way to apply
 *  backpressure: on WOULD_BLOCK from p11n_send, keep the message, pause,
 *  and send it and resume from `writable`. Messages kept while paused are
 *  delivered by the loop after resuming, never inside this call. A peer
 *  that resets the connection while reading is paused ends it (RESET).
 *  Errors: INVALID_ARG, STATE (not established). */
P11N_API P11N_WARN_UNUSED int p11n_conn_pause_read(p11n_conn *conn, int pause);

/** Replace the `arg` given to this connection's callbacks. */
P11N_API void p11n_conn_set_arg(p11n_conn *conn, void *arg);

/** The authenticated peer (as in `established`: its identifier when the
 *  store has one, else its key in hex), or NULL before. */
P11N_API const char *p11n_conn_peer(const p11n_conn *conn);

/** The authenticated peer's identifier, or NULL (not established, or a
 *  peer named by key that is not in the store). */
P11N_API const char *p11n_conn_peer_id(const p11n_conn *conn);

/** The authenticated peer's static public key. Errors: INVALID_ARG,
 *  STATE (not established yet). */
P11N_API int p11n_conn_peer_key(const p11n_conn *conn, uint8_t out[P11N_PUBKEY_LEN]);

/* ---- addresses ---- */

/** Split "HOST:PORT" or "[IPV6]:PORT", the address form of the socks5
 *  option (whose parser uses this one): HOST is a name or an IPv4
 *  address (no ':'), or an IPv6 address in brackets; PORT is 0-65535 in
 *  decimal digits alone (no sign, no space; whether 0 means anything is
 *  the caller's to decide). `host` (cap bytes) receives HOST without the
 *  brackets, NUL-terminated. Errors: INVALID_ARG (a NULL argument), PARSE
 *  (syntax, empty HOST, a name in brackets), BUFFER_TOO_SMALL (HOST does
 *  not fit in cap). */
P11N_API P11N_WARN_UNUSED int p11n_hostport_parse(const char *s, char *host, size_t cap,
    uint16_t *port);

/* ---- running the loop ---- */

/** Run until p11n_stop(). Returns P11N_OK, or IO if the wait fails. */
P11N_API int p11n_run(p11n_ctx *ctx);

/** Wait up to `timeout_ms` (-1: until something happens) and handle what
 *  is ready. Does not wait when work done before the wait (writing queued
 *  messages) already called back the application (e.g. `writable` or a
 *  final `closed`), so the caller sees it at once. Returns P11N_OK,
 *  SHUTDOWN after p11n_stop(), or IO. */
P11N_API int p11n_run_once(p11n_ctx *ctx, int timeout_ms);

/** Ask the loop to return. Safe from any thread and from signal handlers. */
P11N_API void p11n_stop(p11n_ctx *ctx);

typedef void (*p11n_post_fn)(p11n_ctx *ctx, void *arg);

/** Have fn(ctx, arg) called on the loop thread (inside p11n_run,
 *  p11n_run_once or p11n_process), soon: the call wakes the loop, as
 *  uv_async_send does. Safe from any thread, not from a signal handler
 *  (it allocates). Calls run in the order they were posted; a call
 *  posted by a posted call runs at the next turn. Calls not yet run when
 *  the context is freed are dropped, never called: `arg` stays the
 *  caller's throughout. This is how another thread sends on a
 *  connection: post a call that does the p11n_send. Errors: INVALID_ARG,
 *  NOMEM (nothing is queued then). */
P11N_API P11N_WARN_UNUSED int p11n_post(p11n_ctx *ctx, p11n_post_fn fn, void *arg);

/** External loop, step 1: the fds to poll (with events) and the longest
 *  wait before p11n_process must be called (-1: no deadline; 0 when this
 *  call wrote queued messages and that called back the application).
 *  Also writes queued messages. `*n` receives the count; when it exceeds
 *  `cap` the call returns BUFFER_TOO_SMALL and fills nothing. With the
 *  epoll backend the set is one fd, the context's epoll fd (POLLIN),
 *  readable while any of the context's fds is ready; with poll() it is
 *  every fd, and its length changes as connections come and go. */
P11N_API int p11n_poll_fds(p11n_ctx *ctx, struct pollfd *fds, size_t cap, size_t *n,
    int *timeout_ms);

/** External loop, step 2: handle the poll results (fds not ours are
 *  ignored) and every expired timer. Returns P11N_OK, SHUTDOWN after
 *  p11n_stop(), or IO (epoll_wait failed). */
P11N_API int p11n_process(p11n_ctx *ctx, const struct pollfd *fds, size_t n);

/* ---- socket activation ---- */

/** Like p11n_listen, on a socket the caller already bound and put in
 *  the listening state (socket activation: systemd's LISTEN_FDS). `fd`
 *  must be a listening IPv4 or IPv6 stream socket; the call makes it
 *  non-blocking and close-on-exec. On success the listener owns `fd`
 *  (p11n_listener_close closes it) and p11n_listener_port reports its
 *  port; on failure `fd` is left open, as it was. Errors: INVALID_ARG
 *  (bad options, or `fd` is not a listening stream socket), NOMEM,
 *  UNKNOWN_PEER, LIMIT, IO (fcntl). */
P11N_API P11N_WARN_UNUSED int p11n_listen_fd(p11n_ctx *ctx, int fd,
    const p11n_listen_options *opts, p11n_listener **out);

/* ---- structured logging ---- */

/** One log event, for p11n_ctx_options.log_record. Valid during the
 *  call only; grows at the end (check `size` before reading a field
 *  added later). */
typedef struct p11n_log_record {
    size_t size;                  /* sizeof(p11n_log_record) of the library */
    int level;                    /* enum p11n_log_level */
    uint64_t unix_ms;             /* wall-clock time, milliseconds since 1970 (UTC) */
    const char *text;             /* the line the `log` callback would get */
    const char *event;            /* what happened in one word ("listening", ...), or
                                     NULL where the library does not name it */
    unsigned long conn_id;        /* the connection ("#id" in the text), 0: none */
    /* Added for connection events ("established", "closed", "failed",
     * "revoked"), NULL elsewhere: */
    const char *peer;             /* the peer: identifier, or key in hex; NULL before
                                     an incoming handshake says who it is */
    const char *addr;             /* the remote address ("IP:PORT", or "HOST:PORT via
                                     PROXY" for an outgoing connection through a proxy) */
    const char *reason;           /* "closed", "failed": why, as the `closed` callback's
                                     text */
} p11n_log_record;

/* ---- status: the connections of a running context ---- */

/** Call fn(c, arg) for every connection of the context that has not
 *  ended (incoming and outgoing, in any state), until fn returns
 *  non-zero; that value is returned, else 0. fn must not close,
 *  connect or free anything (a snapshot with p11n_conn_info_get is what
 *  it is for). INVALID_ARG for a NULL ctx or fn. Loop thread only. */
P11N_API int p11n_conn_foreach(p11n_ctx *ctx, int (*fn)(p11n_conn *c, void *arg), void *arg);

#define P11N_CONN_ADDR_MAX 64
#define P11N_CONN_HASH_MAX 64     /* longest handshake hash (SHA-512, BLAKE2b) */

/** The Noise handshake hash h at the end of c's handshake, for channel
 *  binding: both ends get the same bytes, unique to this session, and
 *  an application may sign them or compare them out of band to show
 *  that no one relays between the two. Not secret. `out` (cap bytes)
 *  receives it and `*len` its length (32 for SHA-256; at most
 *  P11N_CONN_HASH_MAX). Available from the `established` callback until
 *  the connection ends (in `closed` it is gone). Errors: INVALID_ARG (a
 *  NULL argument), STATE (the handshake has not finished, or the
 *  connection has ended), BUFFER_TOO_SMALL (`*len` says how much is
 *  needed). */
P11N_API P11N_WARN_UNUSED int p11n_conn_handshake_hash(const p11n_conn *c, uint8_t *out,
    size_t cap, size_t *len);

/** A snapshot of one connection; grows at the end like the option
 *  structures: set `size` with P11N_CONN_INFO_INIT. Everything is
 *  copied: it stays valid after the connection is gone. */
typedef struct p11n_conn_info {
    size_t size;                  /* sizeof(p11n_conn_info): P11N_CONN_INFO_INIT */
    unsigned long id;             /* "#id" in the log lines */
    int incoming;                 /* accepted by a listener (else dialled) */
    const char *state;            /* static text: "dialing", "handshake", "established",
                                     "closing", "backoff", "starting" */
    char peer[2 * P11N_PUBKEY_LEN + 1]; /* authenticated peer (identifier or hex); before
                                     that, the peer dialled; "" for an incoming handshake */
    char peer_id[P11N_MAX_IDENTIFIER + 1]; /* its identifier in the store; "" if none */
    char addr[P11N_CONN_ADDR_MAX]; /* the remote address ("" before connected) */
    uint64_t since_ms;            /* how long the current attempt or connection has lasted */
    uint64_t msgs_in, msgs_out;   /* messages received and sent in this connection */
    uint64_t bytes_in, bytes_out; /* their plaintext bytes */
    /* Added with the handshake hash: */
    uint64_t rotations_in, rotations_out; /* key rotations (every 500 messages) each way */
    uint64_t last_rotation_unix_ms; /* wall clock of the last one, ms since 1970 UTC; 0: none */
    uint8_t handshake_hash[P11N_CONN_HASH_MAX]; /* as p11n_conn_handshake_hash gives it */
    size_t handshake_hash_len;    /* 0 until established */
} p11n_conn_info;

#define P11N_CONN_INFO_INIT { .size = sizeof(p11n_conn_info) }

/** Fill *out (its `size` set by P11N_CONN_INFO_INIT) with c's state.
 *  An older, smaller structure gets the fields it has. Errors:
 *  INVALID_ARG (NULL, or `size` not set). */
P11N_API int p11n_conn_info_get(const p11n_conn *c, p11n_conn_info *out);

#ifdef __cplusplus
}
#endif

#endif /* P11NOISE_H */
