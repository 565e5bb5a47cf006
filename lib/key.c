/*
 * Software static keys: the private key lives in process memory. For
 * development and tests; production keys live in a token (pkcs11/).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "key.h"
#include "secure.h"

struct soft_key {
    struct p11n_key base;   /* first: the engine sees only this */
    uint8_t priv[P11N_MAXPRIVLEN];
};

static int soft_dh(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    struct soft_key *k = (struct soft_key *)key;
    return key->alg->dh(k->priv, peer, out);
}

static void soft_destroy(struct p11n_key *key)
{
    p11n_wipe(key, sizeof(struct soft_key));
    free(key);
}

static const struct p11n_key_ops soft_ops = {
    .kind = "software",
    .slow = 0,
    .dh = soft_dh,
    .destroy = soft_destroy,
};

static struct soft_key *soft_alloc(const p11n_dh_alg *alg)
{
    struct soft_key *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    k->base.ops = &soft_ops;
    k->base.alg = alg;
    return k;
}

/* A key from private bytes of exactly alg->privlen; the caller wipes its
 * copy. */
static int soft_from_private(const p11n_dh_alg *alg, const uint8_t *priv,
    struct p11n_key **out)
{
    struct soft_key *k = soft_alloc(alg);
    if (k == NULL)
        return P11N_ERR_NOMEM;
    memcpy(k->priv, priv, alg->privlen);
    int rc = alg->pubkey(k->priv, k->base.pub);
    if (rc != P11N_OK) {
        soft_destroy(&k->base);
        return rc;
    }
    *out = &k->base;
    return P11N_OK;
}

static const p11n_dh_alg *dh_alg(const char *dh_name)
{
    return dh_name != NULL ? p11n_dh_by_name(dh_name, strlen(dh_name)) : NULL;
}

int p11n_key_from_private(const char *dh_name, const uint8_t *priv, size_t len,
    p11n_key **out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (dh_name == NULL || priv == NULL)
        return P11N_ERR_INVALID_ARG;
    const p11n_dh_alg *alg = dh_alg(dh_name);
    if (alg == NULL)
        return P11N_ERR_UNSUPPORTED;
    if (len != alg->privlen)
        return P11N_ERR_INVALID_ARG;
    return soft_from_private(alg, priv, out);
}

int p11n_key_generate(const char *dh_name, p11n_key **out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (dh_name == NULL)
        return P11N_ERR_INVALID_ARG;
    const p11n_dh_alg *alg = dh_alg(dh_name);
    if (alg == NULL)
        return P11N_ERR_UNSUPPORTED;
    struct soft_key *k = soft_alloc(alg);
    if (k == NULL)
        return P11N_ERR_NOMEM;
    int rc = alg->generate(k->priv, k->base.pub);
    if (rc != P11N_OK) {
        soft_destroy(&k->base);
        return rc;
    }
    *out = &k->base;
    return P11N_OK;
}

int p11n_key_public(const p11n_key *key, uint8_t *out, size_t cap, size_t *outlen)
{
    if (key == NULL || out == NULL || outlen == NULL)
        return P11N_ERR_INVALID_ARG;
    size_t n = key->alg->publen;
    if (cap < n)
        return P11N_ERR_BUFFER_TOO_SMALL;
    memcpy(out, key->pub, n);
    *outlen = n;
    return P11N_OK;
}

const char *p11n_key_dh_name(const p11n_key *key)
{
    return key != NULL ? key->alg->name : NULL;
}

void p11n_key_free(p11n_key *key)
{
    if (key != NULL)
        key->ops->destroy(key);
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int p11n_key_parse_text(const char *text, size_t len, const p11n_dh_alg *alg,
    struct p11n_key **out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if ((text == NULL && len > 0) || alg == NULL)
        return P11N_ERR_INVALID_ARG;
    while (len > 0 && is_space(text[len - 1]))
        len--;
    uint8_t priv[P11N_MAXPRIVLEN];
    int rc = p11n_hex_decode(text != NULL ? text : "", len, priv, alg->privlen);
    if (rc == P11N_OK)
        rc = soft_from_private(alg, priv, out);
    p11n_wipe(priv, sizeof(priv));
    return rc;
}

/* Room for the longest key (X448: 112 digits) and generous trailing space;
 * anything longer is not a key file. */
#define KEYFILE_MAX 512

int p11n_key_load_file(const char *path, const p11n_dh_alg *alg, struct p11n_key **out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (path == NULL || alg == NULL)
        return P11N_ERR_INVALID_ARG;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? P11N_ERR_KEY_NOT_FOUND : P11N_ERR_IO;

    char buf[KEYFILE_MAX + 1];
    size_t len = 0;
    int rc = P11N_OK;
    /* Read one byte past the limit to tell "exactly full" from "too long". */
    while (len < sizeof(buf)) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = P11N_ERR_IO;
            break;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (rc == P11N_OK)
        rc = len > KEYFILE_MAX ? P11N_ERR_PARSE : p11n_key_parse_text(buf, len, alg, out);
    p11n_wipe(buf, sizeof(buf));
    return rc;
}
