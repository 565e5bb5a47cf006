/* Records the seed corpus of fuzz_session: real sessions between the side
 * the harness plays and an honest peer, with the keys and ephemerals of
 * session.h. Each seed holds the peer's acts, then its frames, cut into
 * records the way a socket might deliver them (a frame split in three, two
 * frames in one read, and a stream long enough to rotate the keys).
 *
 *   record_session DIR   write the seeds into DIR
 *   record_session       record into a temporary directory and compare
 *                        with the committed seeds (P11N_FUZZ_CORPUS): a
 *                        change of the wire format shows up here, and the
 *                        seeds are then recorded again with the first form.
 *
 * The harness's own code sets up the side under test, so recorder and
 * harness cannot drift apart. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "fuzz_session.c"

typedef struct {
    uint8_t buf[64 * 1024];
    size_t len;
} seed;

static void put_record(seed *sd, const uint8_t *p, size_t n)
{
    CHECK(n <= 0xffff && sd->len + 2 + n <= sizeof(sd->buf));
    sd->buf[sd->len++] = (uint8_t)(n >> 8);
    sd->buf[sd->len++] = (uint8_t)n;
    memcpy(sd->buf + sd->len, p, n);
    sd->len += n;
}

/* The honest peer of the side that `cfg` describes. */
static p11n_handshake *peer_of(uint8_t cfg, p11n_key **key)
{
    int xk = (cfg & S_CFG_XK) != 0, side_initiates = (cfg & S_CFG_INITIATOR) != 0;
    uint8_t eph[32], remote[1][P11N_PUBKEY_LEN];
    memset(eph, side_initiates ? S_RESPONDER_EPH_FILL : S_INITIATOR_EPH_FILL, sizeof(eph));
    *key = key_of(side_initiates ? S_RESPONDER_FILL : S_INITIATOR_FILL);
    public_of(side_initiates ? S_INITIATOR_FILL : S_RESPONDER_FILL, remote[0]);
    size_t nremote = side_initiates && xk ? 0 : 1;
    p11n_handshake_config hc = { .size = sizeof(p11n_handshake_config),
        .pattern = xk ? "XK" : "KK", .local = *key,
        .remote = nremote > 0 ? remote : NULL, .nremote = nremote, .test_ephemeral = eph };
    p11n_handshake *hs = NULL;
    CHECK((side_initiates ? p11n_handshake_respond(&hc, &hs)
                          : p11n_handshake_initiate(&hc, &hs)) == P11N_OK);
    return hs;
}

/* Run the handshake between the side and its peer, recording the peer's
 * acts; returns the peer's transport. */
static p11n_transport *record_handshake(uint8_t cfg, seed *sd)
{
    side s;
    memset(&s, 0, sizeof(s));
    setup(cfg, &s);
    p11n_key *pkey = NULL;
    p11n_handshake *peer = peer_of(cfg, &pkey);
    while (!p11n_handshake_done(s.hs) || !p11n_handshake_done(peer)) {
        int side_writes = p11n_handshake_want(s.hs) == 0 && !p11n_handshake_done(s.hs);
        p11n_handshake *w = side_writes ? s.hs : peer, *r = side_writes ? peer : s.hs;
        uint8_t act[MAX_ACT];
        size_t n = 0;
        CHECK(p11n_handshake_write(w, act, sizeof(act), &n) == P11N_OK);
        CHECK(p11n_handshake_read(r, act, n) == P11N_OK);
        if (!side_writes)
            put_record(sd, act, n);
    }
    p11n_transport *t = NULL;
    CHECK(p11n_handshake_finish(peer, &t) == P11N_OK);
    p11n_handshake_free(peer);
    p11n_key_free(pkey);
    p11n_handshake_free(s.hs);
    p11n_key_free(s.local);
    return t;
}

/* Seal messages of the given sizes into one stream and record it in
 * pieces of `piece` bytes (0: one frame per record, the last message's
 * frame split in three). */
static void record_frames(p11n_transport *t, const size_t *sizes, size_t n, size_t piece,
    seed *sd)
{
    static uint8_t stream[48 * 1024], msg[P11N_MAX_MESSAGE];
    size_t len = 0, flen = 0, last = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < sizes[i]; j++)
            msg[j] = (uint8_t)('a' + (i + j) % 26);
        last = len;
        CHECK(p11n_transport_seal(t, msg, sizes[i], stream + len, sizeof(stream) - len,
            &flen) == P11N_OK);
        len += flen;
    }
    if (piece == 0) {
        put_record(sd, stream, last);   /* every frame but the last in one read */
        put_record(sd, stream + last, 1);
        put_record(sd, stream + last + 1, 17);
        put_record(sd, stream + last + 18, len - last - 18);
        return;
    }
    for (size_t off = 0; off < len; off += piece)
        put_record(sd, stream + off, len - off < piece ? len - off : piece);
}

static int write_seed(const char *dir, const char *name, const seed *sd)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int ok = f != NULL && fwrite(sd->buf, 1, sd->len, f) == sd->len;
    if (f != NULL && fclose(f) != 0)
        ok = 0;
    if (!ok)
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return ok;
}

static const struct {
    const char *name;
    uint8_t cfg;
    int rotate;
} sessions[] = {
    { "kk-responder", S_CFG(0, 0, 0, 0), 0 },
    { "kk-responder-8-candidates", S_CFG(0, 0, 7, 5), 0 },
    { "kk-initiator", S_CFG(0, 1, 0, 0), 0 },
    { "kk-initiator-rotation", S_CFG(0, 1, 0, 0), 1 },
    { "xk-responder-any", S_CFG(1, 0, 0, 0), 0 },
    { "xk-responder-3-listed", S_CFG(1, 0, 3, 2), 0 },
    { "xk-initiator", S_CFG(1, 1, 0, 0), 0 },
};

static int record_all(const char *dir)
{
    static const size_t plain[] = { 5, 0, 1, 300 };
    static size_t many[510];
    for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++)
        many[i] = i % 7;
    int ok = 1;
    for (size_t i = 0; i < sizeof(sessions) / sizeof(sessions[0]); i++) {
        static seed sd;
        sd.len = 0;
        sd.buf[sd.len++] = sessions[i].cfg;
        p11n_transport *t = record_handshake(sessions[i].cfg, &sd);
        if (sessions[i].rotate)
            record_frames(t, many, sizeof(many) / sizeof(many[0]), 1000, &sd);
        else
            record_frames(t, plain, sizeof(plain) / sizeof(plain[0]), 0, &sd);
        p11n_transport_free(t);
        ok &= write_seed(dir, sessions[i].name, &sd);
    }
    return ok;
}

static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa != NULL && fb != NULL, ca, cb;
    while (same && ((ca = getc(fa)) != EOF) | ((cb = getc(fb)) != EOF))
        same = ca == cb;
    if (fa != NULL)
        fclose(fa);
    if (fb != NULL)
        fclose(fb);
    return same;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return record_all(argv[1]) ? 0 : 1;
    char dir[] = "/tmp/p11n-seeds-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    int ok = record_all(dir);
    for (size_t i = 0; i < sizeof(sessions) / sizeof(sessions[0]); i++) {
        char fresh[4096], committed[4096];
        snprintf(fresh, sizeof(fresh), "%s/%s", dir, sessions[i].name);
        snprintf(committed, sizeof(committed), "%s/%s", P11N_FUZZ_CORPUS, sessions[i].name);
        if (!same_file(fresh, committed)) {
            fprintf(stderr, "%s differs from a session recorded now: run %s %s\n",
                committed, argv[0], P11N_FUZZ_CORPUS);
            ok = 0;
        }
        remove(fresh);
    }
    rmdir(dir);
    if (ok)
        printf("%zu recorded sessions match the seed corpus\n",
            sizeof(sessions) / sizeof(sessions[0]));
    return ok ? 0 : 1;
}
