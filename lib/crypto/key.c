/*
 * Software static keys: the private key lives in process memory. For
 * development and tests; production keys live in a token (pkcs11/).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* A software key from private bytes of exactly alg->privlen (the caller
 * wipes its copy), or freshly generated when priv is NULL. */
static int soft_make(const p11n_dh_alg *alg, const uint8_t *priv, struct p11n_key **out)
{
    struct soft_key *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return P11N_ERR_NOMEM;
    k->base.ops = &soft_ops;
    k->base.alg = alg;
    int rc;
    if (priv != NULL) {
        memcpy(k->priv, priv, alg->privlen);
        rc = alg->pubkey(k->priv, k->base.pub);
    } else {
        rc = alg->generate(k->priv, k->base.pub);
    }
    if (rc != P11N_OK) {
        soft_destroy(&k->base);
        return rc;
    }
    *out = &k->base;
    return P11N_OK;
}

/* The public entry points' common start: *out cleared, the other
 * arguments checked (args_ok), the DH looked up. */
static int dh_alg(const char *dh_name, int args_ok, p11n_key **out, const p11n_dh_alg **alg)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (dh_name == NULL || !args_ok)
        return P11N_ERR_INVALID_ARG;
    *alg = p11n_dh_by_name(dh_name, strlen(dh_name));
    return *alg != NULL ? P11N_OK : P11N_ERR_UNSUPPORTED;
}

int p11n_key_from_private(const char *dh_name, const uint8_t *priv, size_t len,
    p11n_key **out)
{
    const p11n_dh_alg *alg;
    int rc = dh_alg(dh_name, priv != NULL, out, &alg);
    if (rc != P11N_OK)
        return rc;
    if (len != alg->privlen)
        return P11N_ERR_INVALID_ARG;
    return soft_make(alg, priv, out);
}

int p11n_key_generate(const char *dh_name, p11n_key **out)
{
    const p11n_dh_alg *alg;
    int rc = dh_alg(dh_name, 1, out, &alg);
    if (rc != P11N_OK)
        return rc;
    return soft_make(alg, NULL, out);
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

const char *p11n_key_warning(const p11n_key *key)
{
    return key != NULL ? key->warning : NULL;
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
    /* Only what follows the key's digits is looked at for whitespace: no
     * branch depends on a digit of the private key. */
    size_t keylen = 2 * alg->privlen;
    while (len > keylen && is_space(text[len - 1]))
        len--;
    uint8_t priv[P11N_MAXPRIVLEN];
    int rc = p11n_hex_decode(text != NULL ? text : "", len, priv, alg->privlen);
    if (rc == P11N_OK)
        rc = soft_make(alg, priv, out);
    p11n_wipe(priv, sizeof(priv));
    return rc;
}

/* Room for the longest key (X448: 112 digits) and generous trailing space;
 * anything longer is not a key file. */
#define KEYFILE_MAX 512

/* Logged once by the event loop for every file: key (see p11n_key_warning). */
static const char FILE_KEY_WARNING[] =
    "file: key: a private key in a file is for development only; use a token key in production";

/* As ssh does for its private keys: a key file that group or others may
 * read is refused. The open file is checked, not the path, so it cannot
 * be swapped between the check and the read. */
static int check_mode(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode))
        return P11N_ERR_IO;
    return (st.st_mode & 077) != 0 ? P11N_ERR_FILE_MODE : P11N_OK;
}

/* Up to KEYFILE_MAX + 1 bytes of fd into buf: one byte past the limit
 * tells "exactly full" from "too long". */
static int read_key_text(int fd, char *buf, size_t *len)
{
    *len = 0;
    while (*len < KEYFILE_MAX + 1) {
        ssize_t r = read(fd, buf + *len, KEYFILE_MAX + 1 - *len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return P11N_ERR_IO;
        if (r == 0)
            break;
        *len += (size_t)r;
    }
    return *len > KEYFILE_MAX ? P11N_ERR_PARSE : P11N_OK;
}

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
    int rc = check_mode(fd);
    if (rc == P11N_OK)
        rc = read_key_text(fd, buf, &len);
    close(fd);
    if (rc == P11N_OK)
        rc = p11n_key_parse_text(buf, len, alg, out);
    if (rc == P11N_OK)
        (*out)->warning = FILE_KEY_WARNING;
    p11n_wipe(buf, sizeof(buf));
    return rc;
}
