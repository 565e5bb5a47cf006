/*
 * A p11noise echo pair in one program: a listener and a client in one
 * context, KK over 127.0.0.1, with throwaway software keys. Real machines
 * use p11n_key_load("pkcs11:...") and peers from the token's ceremony
 * objects (p11n_peers_load_token; calling it again after the ceremony
 * changes reloads the store, and connections of peers removed or given a
 * new key are closed at once).
 *
 * Build: cc api-example.c $(pkg-config --cflags --libs p11noise)
 */
#include <stdio.h>
#include <string.h>

#include <p11noise.h>

struct app {
    p11n_ctx *ctx;
    int echoes;
    int status;
};

/* Server side: send every message back. */
static void on_server_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    (void)arg;
    if (p11n_send(c, msg, len) != P11N_OK)
        p11n_close(c);
}

/* Client side: say hello three times once the handshake is done. */
static void on_client_up(p11n_conn *c, const char *peer, void *arg)
{
    (void)arg;
    printf("connected to %s\n", peer);
    for (int i = 0; i < 3; i++) {
        const char *hello = "hello";
        if (p11n_send(c, (const uint8_t *)hello, strlen(hello)) != P11N_OK)
            p11n_close(c);
    }
}

static void on_client_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    struct app *app = arg;
    printf("echo: %.*s\n", (int)len, (const char *)msg);
    if (++app->echoes == 3)
        p11n_close(c); /* flushes, then closes */
}

static void on_client_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    struct app *app = arg;
    (void)c;
    printf("closed: %s\n", text);
    if (final) {
        app->status = reason == P11N_OK && app->echoes == 3 ? 0 : 1;
        p11n_stop(app->ctx);
    }
}

int main(void)
{
    struct app app = { .status = 1 };
    p11n_key *server_key = NULL, *client_key = NULL;
    p11n_listener *l = NULL;
    p11n_conn *conn = NULL;
    uint8_t server_pub[P11N_PUBKEY_LEN], client_pub[P11N_PUBKEY_LEN];
    size_t len;

    if (p11n_key_generate("secp256k1", &server_key) != P11N_OK
        || p11n_key_generate("secp256k1", &client_key) != P11N_OK
        || p11n_key_public(server_key, server_pub, sizeof(server_pub), &len) != P11N_OK
        || p11n_key_public(client_key, client_pub, sizeof(client_pub), &len) != P11N_OK
        || p11n_ctx_new(NULL, &app.ctx) != P11N_OK)
        goto out;

    /* The ceremony: each side learns the other's public key. */
    if (p11n_ceremony_input(app.ctx, server_pub, "server", 0) != P11N_OK
        || p11n_ceremony_input(app.ctx, client_pub, "client", 0) != P11N_OK)
        goto out;

    static const char *const accepted[] = { "client" };
    p11n_listen_options lo = {
        .size = sizeof(lo),
        .ch = { .key = server_key, .cb = { .message = on_server_message } },
        .peers = accepted,
        .npeers = 1,
    };
    int rc = p11n_listen(app.ctx, "127.0.0.1", 0, &lo, &l);
    if (rc != P11N_OK) {
        fprintf(stderr, "listen: %s\n", p11n_strerror(rc));
        goto out;
    }

    p11n_connect_options co = {
        .size = sizeof(co),
        .ch = { .key = client_key,
                .cb = { .established = on_client_up, .message = on_client_message,
                        .closed = on_client_closed, .arg = &app } },
    };
    rc = p11n_connect(app.ctx, "127.0.0.1", p11n_listener_port(l), "server", &co, &conn);
    if (rc != P11N_OK) {
        fprintf(stderr, "connect: %s\n", p11n_strerror(rc));
        goto out;
    }
    rc = p11n_run(app.ctx); /* until on_client_closed calls p11n_stop */
    if (rc != P11N_OK)
        app.status = 1;
out:
    p11n_ctx_free(app.ctx); /* closes the listener and the server's connection */
    p11n_key_free(server_key);
    p11n_key_free(client_key);
    return app.status;
}
