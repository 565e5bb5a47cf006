/*
 * The PROXY protocol v2 header (HAProxy's proxy-protocol.txt, section 2.2)
 * that `tunnel server --proxy-protocol` writes to the target before any
 * byte of the peer's, so the service learns which authenticated peer the
 * connection carries.
 *
 * Command LOCAL (0x20), family UNSPEC (0x00), no address block: the public
 * API gives no remote address for a channel, and behind a SOCKS5 proxy the
 * address would be the proxy's anyway — identity is the key. One TLV in
 * the custom range (0xE0-0xEF) follows:
 *   0xE0  the authenticated peer as p11n_conn_peer() names it: its
 *         identifier from the ceremony, or its public key in hex (66
 *         digits) when the peer store has no identifier for it
 * A receiver must not use the connection's own addresses to decide who the
 * peer is; it reads the TLV.
 */
#include <string.h>

#include "tunnel.h"

static const uint8_t ppv2_sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55,
    0x49, 0x54, 0x0A };

#define PPV2_LOCAL 0x20           /* version 2, command LOCAL */
#define PPV2_UNSPEC 0x00          /* family and transport unspecified */
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

size_t tun_ppv2_header(const char *peer, uint8_t *out, size_t cap)
{
    size_t plen = strlen(peer);
    size_t body = TLV_HEAD + plen;
    if (body > 0xFFFF || PPV2_FIXED + body > cap)
        return 0;
    memcpy(out, ppv2_sig, sizeof(ppv2_sig));
    out[12] = PPV2_LOCAL;
    out[13] = PPV2_UNSPEC;
    out[14] = (uint8_t)(body >> 8);
    out[15] = (uint8_t)body;
    size_t n = PPV2_FIXED;
    n += put_tlv(out + n, PPV2_TLV_PEER, (const uint8_t *)peer, plen);
    return n;
}
