#include "p11noise.h"

/* Texts are written for a log line: what failed, in the reader's terms. */
static const struct {
    int code;
    const char *text;
} errors[] = {
    { P11N_OK, "success" },
    { P11N_ERR_INVALID_ARG, "invalid argument" },
    { P11N_ERR_NOMEM, "out of memory" },
    { P11N_ERR_BUFFER_TOO_SMALL, "output buffer too small" },
    { P11N_ERR_STATE, "operation not valid in this state (or object failed earlier)" },
    { P11N_ERR_UNSUPPORTED, "protocol, pattern or algorithm not supported" },
    { P11N_ERR_CRYPTO, "crypto backend failure" },
    { P11N_ERR_MISSING_KEY, "a key required by the handshake pattern was not provided" },
    { P11N_ERR_BAD_PRIVKEY, "invalid private key" },
    { P11N_ERR_NONCE_EXHAUSTED, "cipher nonce exhausted" },
    { P11N_ERR_PARSE, "malformed input" },
    { P11N_ERR_FILE_MODE, "file readable by group or others (chmod 600 it)" },
    { P11N_ERR_SHORT_MESSAGE, "handshake message too short" },
    { P11N_ERR_LONG_MESSAGE, "handshake message too long" },
    { P11N_ERR_BAD_VERSION, "unsupported handshake version" },
    { P11N_ERR_BAD_PUBKEY, "invalid public key" },
    { P11N_ERR_BAD_CIPHERTEXT, "encrypted static key failed authentication" },
    { P11N_ERR_BAD_TAG, "authentication tag mismatch" },
    { P11N_ERR_MESSAGE_TOO_LARGE, "message larger than 65535 bytes" },
    { P11N_ERR_UNKNOWN_PEER, "peer's static key is not a known peer" },
    { P11N_ERR_URI, "malformed key or token URI" },
    { P11N_ERR_MODULE, "PKCS#11 module could not be loaded or initialized" },
    { P11N_ERR_TOKEN_NOT_FOUND, "token not found" },
    { P11N_ERR_PIN_REQUIRED, "token PIN required but none given" },
    { P11N_ERR_PIN_INCORRECT, "token PIN incorrect" },
    { P11N_ERR_PIN_LOCKED, "token PIN locked" },
    { P11N_ERR_KEY_NOT_FOUND, "key not found on token" },
    { P11N_ERR_KEY_NO_DERIVE, "token key does not allow derivation (CKA_DERIVE)" },
    { P11N_ERR_KEY_WRONG_CURVE, "token key is not on secp256k1" },
    { P11N_ERR_NO_ECDH, "token does not support CKM_ECDH1_DERIVE" },
    { P11N_ERR_TOKEN_REMOVED, "token or device removed" },
    { P11N_ERR_TOKEN, "token operation failed" },
    { P11N_ERR_EXISTS, "label or identifier already exists" },
    { P11N_ERR_BAD_IDENTIFIER, "invalid identifier (1-64 characters of A-Z a-z 0-9 . _ -)" },
    { P11N_ERR_PUBKEY_MISMATCH, "identifier already present with a different key" },
    { P11N_ERR_TOKEN_UNAVAILABLE, "token unavailable (lost its sessions; retrying)" },
    { P11N_ERR_PIN_FINAL_TRY, "token allows one more PIN try only: not logging in" },
    { P11N_ERR_KEY_EXTRACTABLE, "token private key is extractable or not sensitive" },
    { P11N_ERR_DUPLICATE_KEY, "public key already present under another identifier" },
    { P11N_ERR_PENDING, "token operation pending: run it, then resume the handshake" },
    { P11N_ERR_IO, "socket error" },
    { P11N_ERR_RESOLVE, "name resolution failed" },
    { P11N_ERR_CONNECT, "connection failed" },
    { P11N_ERR_TIMEOUT, "timed out" },
    { P11N_ERR_CLOSED, "connection closed by peer" },
    { P11N_ERR_RESET, "connection reset by peer" },
    { P11N_ERR_WOULD_BLOCK, "write queue full; wait for writable" },
    { P11N_ERR_LIMIT, "limit reached" },
    { P11N_ERR_SHUTDOWN, "context shutting down" },
    { P11N_ERR_REVOKED, "peer key revoked" },
    { P11N_ERR_EVICTED, "evicted to admit a newer connection (handshake table full)" },
    { P11N_ERR_OVERLOAD, "too much unauthenticated token work queued" },
    { P11N_ERR_SOCKS_UNREACHABLE, "SOCKS5 proxy unreachable" },
    { P11N_ERR_SOCKS_NO_METHOD, "SOCKS5 proxy accepted no offered authentication method" },
    { P11N_ERR_SOCKS_AUTH, "SOCKS5 proxy rejected the username/password" },
    { P11N_ERR_SOCKS_VERSION, "SOCKS5 proxy replied with a wrong version byte" },
    { P11N_ERR_SOCKS_MALFORMED, "SOCKS5 proxy reply malformed or truncated" },
    { P11N_ERR_SOCKS_CREDENTIALS, "SOCKS5 username or password longer than 255 bytes" },
    { P11N_ERR_SOCKS_GENERAL, "general SOCKS server failure, reported by proxy" },
    { P11N_ERR_SOCKS_NOT_ALLOWED, "connection not allowed by ruleset, reported by proxy" },
    { P11N_ERR_SOCKS_NET_UNREACH, "network unreachable, reported by proxy" },
    { P11N_ERR_SOCKS_HOST_UNREACH, "host unreachable, reported by proxy" },
    { P11N_ERR_SOCKS_REFUSED, "connection refused by target, reported by proxy" },
    { P11N_ERR_SOCKS_TTL, "TTL expired, reported by proxy" },
    { P11N_ERR_SOCKS_COMMAND, "command not supported, reported by proxy" },
    { P11N_ERR_SOCKS_ATYP, "address type not supported, reported by proxy" },
    { P11N_ERR_SOCKS_REPLY, "unknown SOCKS5 reply code" },
};

const char *p11n_strerror(int err)
{
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
        if (errors[i].code == err)
            return errors[i].text;
    return "unknown error";
}
