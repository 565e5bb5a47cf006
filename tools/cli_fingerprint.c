/*
 * A public key's fingerprint for the ceremony's out-of-band check, short
 * enough to read aloud over the phone: SHA-256 of the 33-byte compressed
 * key, its first 20 bytes (160 bits) in base32 (RFC 4648, A-Z 2-7: no
 * 0/O or 1/I to confuse), in eight groups of four joined by '-'.
 * Both ends compute it from the key each holds; equal fingerprints mean
 * equal keys (a forgery would need a 160-bit second preimage).
 */
#include <openssl/evp.h>
#include <string.h>

#include "cli.h"

#define FP_BYTES 20               /* 160 bits: 32 base32 characters */

int cli_fingerprint(const uint8_t pub[P11N_PUBKEY_LEN], char out[CLI_FINGERPRINT_LEN])
{
    static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(pub, P11N_PUBKEY_LEN, md, &mdlen, EVP_sha256(), NULL) != 1)
        return -1;
    size_t n = 0;
    unsigned acc = 0, bits = 0;
    for (size_t i = 0; i < FP_BYTES; i++) {
        acc = (acc << 8) | md[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            if (n > 0 && n % 5 == 4)
                out[n++] = '-';
            out[n++] = b32[(acc >> bits) & 31];
        }
    }
    out[n] = '\0';
    return 0;
}
