/* A new secp256k1 key pair on a token, for a machine's static key. */
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "token.h"

#define P11N_KEY_ID_LEN 16

static int label_taken(struct p11n_token *tok, const char *label, int *taken)
{
    CK_ATTRIBUTE tmpl[] = { { CKA_LABEL, (void *)label, strlen(label) } };
    CK_OBJECT_HANDLE *h;
    size_t n;
    int err = p11n_token_find(tok, tok->anchor, tmpl, 1, &h, &n);
    free(h);
    *taken = n > 0;
    return err;
}

static int generate(struct p11n_token *tok, const char *label, uint8_t pub[P11N_PUBKEY_LEN])
{
    uint8_t id[P11N_KEY_ID_LEN];
    if (p11n_random(id, sizeof(id)) != P11N_OK)
        return P11N_ERR_CRYPTO;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG labellen = strlen(label);
    /* The public half is private and fixed: the parity recovery trusts
     * it, and a public object could be replaced by anyone who can open a
     * session without the PIN, breaking every handshake. */
    CK_ATTRIBUTE pubt[] = {
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_MODIFIABLE, &no, sizeof(no) },
        { CKA_EC_PARAMS, (void *)p11n_secp256k1_oid, sizeof(p11n_secp256k1_oid) },
        { CKA_LABEL, (void *)label, labellen },
        { CKA_ID, id, sizeof(id) },
        { CKA_VERIFY, &no, sizeof(no) },
        { CKA_ENCRYPT, &no, sizeof(no) },
        { CKA_WRAP, &no, sizeof(no) },
    };
    /* The private half can only derive: it never leaves the token, and
     * never signs, decrypts or unwraps, so no other use of the key can
     * be turned against the Noise one. */
    CK_ATTRIBUTE privt[] = {
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_SENSITIVE, &yes, sizeof(yes) },
        { CKA_EXTRACTABLE, &no, sizeof(no) },
        { CKA_DERIVE, &yes, sizeof(yes) },
        { CKA_SIGN, &no, sizeof(no) },
        { CKA_SIGN_RECOVER, &no, sizeof(no) },
        { CKA_DECRYPT, &no, sizeof(no) },
        { CKA_UNWRAP, &no, sizeof(no) },
        { CKA_LABEL, (void *)label, labellen },
        { CKA_ID, id, sizeof(id) },
    };
    CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
    CK_OBJECT_HANDLE hpub, hpriv;
    CK_RV rv = tok->fn->C_GenerateKeyPair(tok->anchor, &mech,
        pubt, sizeof(pubt) / sizeof(pubt[0]), privt, sizeof(privt) / sizeof(privt[0]),
        &hpub, &hpriv);
    if (rv != CKR_OK)
        return p11n_token_fail(tok, "C_GenerateKeyPair", rv);
    uint8_t *pt;
    size_t ptlen;
    int err = p11n_token_attr(tok, tok->anchor, hpub, CKA_EC_POINT, &pt, &ptlen);
    if (err == P11N_OK && (pt == NULL || p11n_ec_point_decode(pt, ptlen, pub) != P11N_OK))
        err = p11n_token_errorf(P11N_ERR_TOKEN, tok->uri,
            "generated public key has no valid CKA_EC_POINT");
    free(pt);
    if (err != P11N_OK) {
        /* A pair we cannot report is a pair nobody can use. */
        tok->fn->C_DestroyObject(tok->anchor, hpub);
        tok->fn->C_DestroyObject(tok->anchor, hpriv);
    }
    return err;
}

int p11n_token_keygen(const char *token_uri, const char *label, uint8_t pub[P11N_PUBKEY_LEN])
{
    if (token_uri == NULL || label == NULL || pub == NULL)
        return P11N_ERR_INVALID_ARG;
    p11n_token_error_clear();
    /* Labels follow the identifier rules so that "NAME PUBHEX" is a valid
     * ceremony line for the peers. */
    if (!p11n_identifier_valid(label))
        return p11n_token_errorf(P11N_ERR_BAD_IDENTIFIER, NULL, "label: %s",
            p11n_strerror(P11N_ERR_BAD_IDENTIFIER));
    P11KitUri *uri;
    char *safe;
    int err = p11n_uri_parse(token_uri, &uri, &safe);
    if (err != P11N_OK)
        return err;
    struct p11n_token *tok = NULL;
    err = p11n_token_open(uri, safe, P11N_TOKEN_LOGIN | P11N_TOKEN_RW, &tok);
    if (err == P11N_OK)
        err = p11n_token_check_ecdh(tok);
    int taken = 0;
    if (err == P11N_OK)
        err = label_taken(tok, label, &taken);
    if (err == P11N_OK && taken)
        err = p11n_token_errorf(P11N_ERR_EXISTS, safe,
            "an object labelled \"%s\" is already on the token", label);
    if (err == P11N_OK)
        err = generate(tok, label, pub);
    p11n_token_close(tok);
    p11n_uri_free(uri);
    free(safe);
    return err;
}
