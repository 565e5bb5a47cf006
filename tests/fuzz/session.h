/* The session the fuzz_session harness replays and tests/fuzz/record_session.c
 * records: fixed software keys and ephemerals, so that one recorded peer's
 * acts and frames replay the same way every time.
 *
 * Input layout: one configuration byte, then records, each a 2-byte
 * big-endian length and that many bytes. While the handshake runs, each
 * record is one act handed to p11n_handshake_read() whenever the side under
 * test wants one (it writes its own acts itself); once it is done, records
 * are chunks of the peer's transport stream, fed to p11n_transport_feed().
 *
 * Configuration byte:
 *   bit 0      XK (else KK)
 *   bit 1      the side under test is the initiator (else the responder)
 *   bits 2-4   responder: candidate keys - 1 (KK), or accepted keys (XK;
 *              0: none listed, any key is accepted)
 *   bits 5-7   responder: where the real initiator's key sits among them
 *              (modulo their number) */
#ifndef P11N_FUZZ_SESSION_H
#define P11N_FUZZ_SESSION_H

#include <stdint.h>

#define S_CFG_XK 0x01u
#define S_CFG_INITIATOR 0x02u
#define S_CFG_COUNT(cfg) (((cfg) >> 2) & 7u)
#define S_CFG_POS(cfg) (((cfg) >> 5) & 7u)
#define S_CFG(xk, init, count, pos) \
    (uint8_t)(((xk) ? S_CFG_XK : 0u) | ((init) ? S_CFG_INITIATOR : 0u) \
        | ((unsigned)(count) << 2) | ((unsigned)(pos) << 5))
#define S_MAX_KEYS 8

/* Private key fill bytes: every byte of the 32-byte scalar is the fill. */
#define S_INITIATOR_FILL 0x11
#define S_INITIATOR_EPH_FILL 0x12
#define S_RESPONDER_FILL 0x21
#define S_RESPONDER_EPH_FILL 0x22
#define S_DECOY_FILL 0x41       /* decoy candidate i uses 0x41 + i */

#endif
