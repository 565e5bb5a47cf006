/*
 * The PROXY protocol v2 header (HAProxy's proxy-protocol.txt, section 2.2)
 * that `tunnel server --proxy-protocol` writes to the target before any
 * byte of the peer's, so the service learns which authenticated peer the
 * connection carries.
 *
 * Command PROXY (0x21) with the addresses of the tunnel's own connection
 * to the target (source: the tunnel's end, destination: the target),
 * TCP over IPv4 or IPv6 or a Unix stream socket: receivers act on the
 * TLVs only after a PROXY command (after LOCAL they must ignore them).
 * The peer's network address is not given: the public API does not
 * expose it, and behind a SOCKS5 proxy it would be the proxy's anyway —
 * identity is the key. TLVs in the custom range (0xE0-0xEF):
 *   0xE0  the authenticated peer as p11n_conn_peer() names it: its
 *         identifier from the ceremony, or its public key in hex (66
 *         digits) when the peer store has no identifier for it
 *   0xE1  the peer's static public key, 33 bytes (compressed secp256k1)
 * A receiver must not use the connection's addresses to decide who the
 * peer is; it reads the TLVs.
 */
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>

#include "tunnel.h"

static const uint8_t ppv2_sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55,
    0x49, 0x54, 0x0A };

#define PPV2_PROXY 0x21           /* version 2, command PROXY */
#define PPV2_UNIX_PATH 108        /* bytes per path in the AF_UNIX block */
#define PPV2_FIXED 16             /* signature, ver_cmd, fam, 2-byte length */
#define TLV_HEAD 3                /* type, 2-byte length */

static size_t put_tlv(uint8_t *p, uint8_t type, const uint8_t *v, size_t len)
{
    p[0] = type;
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    memcpy(p + TLV_HEAD, v, len);
    return TLV_HEAD + len;
}

/* The address block for fd's two ends: family byte and length, or -1
 * for a family the format has no block for. */
static int put_addrs(int fd, uint8_t *fam, uint8_t *p, size_t cap)
{
    struct sockaddr_storage a, b;
    socklen_t la = sizeof(a), lb = sizeof(b);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    if (getsockname(fd, (struct sockaddr *)&a, &la) != 0 ||
        getpeername(fd, (struct sockaddr *)&b, &lb) != 0 || a.ss_family != b.ss_family)
        return -1;
    if (a.ss_family == AF_INET && cap >= 12) {
        const struct sockaddr_in *x = (const void *)&a, *y = (const void *)&b;
        *fam = 0x11;    /* TCP over IPv4 */
        memcpy(p, &x->sin_addr, 4);
        memcpy(p + 4, &y->sin_addr, 4);
        memcpy(p + 8, &x->sin_port, 2);   /* both already in network order */
        memcpy(p + 10, &y->sin_port, 2);
        return 12;
    }
    if (a.ss_family == AF_INET6 && cap >= 36) {
        const struct sockaddr_in6 *x = (const void *)&a, *y = (const void *)&b;
        *fam = 0x21;    /* TCP over IPv6 */
        memcpy(p, &x->sin6_addr, 16);
        memcpy(p + 16, &y->sin6_addr, 16);
        memcpy(p + 32, &x->sin6_port, 2);
        memcpy(p + 34, &y->sin6_port, 2);
        return 36;
    }
    if (a.ss_family == AF_UNIX && cap >= 2 * PPV2_UNIX_PATH) {
        const struct sockaddr_un *x = (const void *)&a, *y = (const void *)&b;
        *fam = 0x31;    /* Unix stream */
        memset(p, 0, 2 * PPV2_UNIX_PATH);
        memcpy(p, x->sun_path, strnlen(x->sun_path, sizeof(x->sun_path)));
        memcpy(p + PPV2_UNIX_PATH, y->sun_path, strnlen(y->sun_path, sizeof(y->sun_path)));
        return 2 * PPV2_UNIX_PATH;
    }
    return -1;
}

size_t tun_ppv2_header(int fd, const char *peer, const uint8_t *key, uint8_t *out, size_t cap)
{
    size_t plen = strlen(peer);
    if (cap < PPV2_FIXED + 2 * TLV_HEAD + plen + P11N_PUBKEY_LEN)
        return 0;
    memcpy(out, ppv2_sig, sizeof(ppv2_sig));
    out[12] = PPV2_PROXY;
    size_t tlvs = 2 * TLV_HEAD + plen + P11N_PUBKEY_LEN;
    int alen = put_addrs(fd, &out[13], out + PPV2_FIXED, cap - PPV2_FIXED - tlvs);
    if (alen < 0)
        return 0;
    size_t body = (size_t)alen + tlvs;
    if (body > 0xFFFF)
        return 0;
    out[14] = (uint8_t)(body >> 8);
    out[15] = (uint8_t)body;
    size_t n = PPV2_FIXED + (size_t)alen;
    n += put_tlv(out + n, PPV2_TLV_PEER, (const uint8_t *)peer, plen);
    n += put_tlv(out + n, PPV2_TLV_PEER_KEY, key, P11N_PUBKEY_LEN);
    return n;
}
