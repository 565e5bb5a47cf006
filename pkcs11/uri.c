/* pkcs11: URIs (parsed by p11-kit) and where a token's PIN comes from. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secure.h"
#include "token.h"

static pthread_mutex_t pin_lock = PTHREAD_MUTEX_INITIALIZER;
static p11n_pin_callback pin_cb;
static void *pin_cb_arg;

void p11n_set_pin_callback(p11n_pin_callback cb, void *arg)
{
    pthread_mutex_lock(&pin_lock);
    pin_cb = cb;
    pin_cb_arg = arg;
    pthread_mutex_unlock(&pin_lock);
}

/* p11-kit frees the values it replaces without wiping them: wipe in place
 * first. The string is p11-kit's own heap copy, so writing it is safe. */
static void clear_pin_value(P11KitUri *uri)
{
    const char *v = p11_kit_uri_get_pin_value(uri);
    if (v != NULL) {
        p11n_wipe((char *)v, strlen(v));
        p11_kit_uri_set_pin_value(uri, NULL);
    }
}

void p11n_uri_free(P11KitUri *uri)
{
    if (uri == NULL)
        return;
    clear_pin_value(uri);
    p11_kit_uri_free(uri);
}

/* 1 if every query attribute is one p11-kit knows. p11-kit keeps any
 * other one as a vendor attribute and formats it back into the URI we
 * print in messages, so a mistyped "pin_value=1234" would put the PIN in
 * every error line and log. */
static int query_known(const char *text)
{
    static const char *const known[] = {
        "pin-value", "pin-source", "module-name", "module-path",
    };
    const char *a = strchr(text, '?');   /* a path never holds a raw '?' */
    while (a != NULL) {
        a++;
        size_t len = strcspn(a, "&"), nlen = strcspn(a, "=&");
        int ok = len == 0;                   /* an empty attribute is harmless */
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) && !ok; i++)
            ok = nlen < len && strlen(known[i]) == nlen && memcmp(a, known[i], nlen) == 0;
        if (!ok)
            return 0;
        a = a[len] == '&' ? a + len : NULL;
    }
    return 1;
}

/* p11-kit's formatted URI (no PIN in it) as messages show it; `s` is
 * freed. NULL when out of memory. */
static char *readable(char *s)
{
    size_t n = p11n_uri_display(s, NULL, 0);
    char *r = malloc(n + 1);
    if (r != NULL)
        p11n_uri_display(s, r, n + 1);
    free(s);
    return r;
}

int p11n_uri_parse(const char *text, P11KitUri **parsed, char **safe)
{
    *parsed = NULL;
    *safe = NULL;
    if (!query_known(text))
        /* Not quoted: the unknown attribute may be a mistyped PIN. */
        return p11n_token_errorf(P11N_ERR_URI, NULL, "unrecognized query attribute in "
            "pkcs11: URI (known: pin-value, pin-source, module-name, module-path)");
    P11KitUri *uri = p11_kit_uri_new();
    P11KitUri *tmp = p11_kit_uri_new();
    if (uri == NULL || tmp == NULL) {
        p11_kit_uri_free(uri);
        p11_kit_uri_free(tmp);
        return P11N_ERR_NOMEM;
    }
    int rc = p11_kit_uri_parse(text, P11_KIT_URI_FOR_ANY, uri);
    if (rc == P11_KIT_URI_OK)
        rc = p11_kit_uri_parse(text, P11_KIT_URI_FOR_ANY, tmp);
    if (rc != P11_KIT_URI_OK) {
        /* The text may hold a PIN: name the fault, not the URI. */
        int err = p11n_token_errorf(P11N_ERR_URI, NULL, "malformed pkcs11: URI (%s)",
            p11_kit_uri_message(rc));
        clear_pin_value(uri);
        clear_pin_value(tmp);
        p11_kit_uri_free(uri);
        p11_kit_uri_free(tmp);
        return err;
    }
    clear_pin_value(tmp);
    char *s = NULL;
    rc = p11_kit_uri_format(tmp, P11_KIT_URI_FOR_ANY, &s);
    p11_kit_uri_free(tmp);
    if (rc == P11_KIT_URI_OK && s != NULL)
        s = readable(s);
    if (rc != P11_KIT_URI_OK || s == NULL) {
        clear_pin_value(uri);
        p11_kit_uri_free(uri);
        return P11N_ERR_NOMEM;
    }
    if (p11_kit_uri_any_unrecognized(uri)) {
        /* RFC 7512: a URI with attributes we do not know cannot match. */
        int err = p11n_token_errorf(P11N_ERR_URI, s, "unrecognized attribute in URI");
        clear_pin_value(uri);
        p11_kit_uri_free(uri);
        free(s);
        return err;
    }
    *parsed = uri;
    *safe = s;
    return P11N_OK;
}

/* As ssh does for private keys: a PIN file that group or others may read
 * is refused, with the fix. The open file is checked, not the path, so it
 * cannot be swapped in between. */
static int check_pin_file_mode(int fd, const char *path, const char *safe)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return p11n_token_errorf(P11N_ERR_URI, safe, "cannot stat pin-source %s: %s", path,
            strerror(errno));
    if ((st.st_mode & 077) != 0)
        return p11n_token_errorf(P11N_ERR_FILE_MODE, safe,
            "pin-source %s is readable by group or others (mode %03o); chmod 600 %s", path,
            (unsigned)(st.st_mode & 0777), path);
    return P11N_OK;
}

/* Read a PIN file: the whole file but a trailing newline. */
static int read_pin_file(const char *path, const char *safe, char *pin, size_t cap, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return p11n_token_errorf(P11N_ERR_URI, safe, "cannot open pin-source %s: %s", path,
            strerror(errno));
    int err = check_pin_file_mode(fd, path, safe);
    if (err != P11N_OK) {
        close(fd);
        return err;
    }
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            close(fd);
            p11n_wipe(pin, cap);
            return p11n_token_errorf(P11N_ERR_URI, safe, "pin-source %s: PIN too long", path);
        }
        ssize_t r = read(fd, pin + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            p11n_wipe(pin, cap);
            return p11n_token_errorf(P11N_ERR_URI, safe, "cannot read pin-source %s: %s",
                path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    /* The PIN's length is public (it goes to C_Login); its bytes are not
     * looked at one by one. */
    n = p11n_ct_trim_eol(pin, n);
    p11n_declassify(&n, sizeof(n));
    if (n == cap) {
        p11n_wipe(pin, cap);
        return p11n_token_errorf(P11N_ERR_URI, safe, "pin-source %s: PIN too long", path);
    }
    pin[n] = '\0';
    *len = n;
    return P11N_OK;
}

int p11n_uri_pin(P11KitUri *uri, const char *safe, int protected_path,
    char *pin, size_t cap, size_t *len)
{
    *len = 0;
    const char *v = p11_kit_uri_get_pin_value(uri);
    if (v != NULL) {
        size_t n = strlen(v);
        if (n >= cap) {
            clear_pin_value(uri);
            return p11n_token_errorf(P11N_ERR_URI, safe, "pin-value too long");
        }
        memcpy(pin, v, n + 1);
        clear_pin_value(uri);
        *len = n;
        return P11N_OK;
    }
    const char *src = p11_kit_uri_get_pin_source(uri);
    if (src != NULL) {
        /* RFC 7512 names a file with a file: URI; a bare path is
         * common in practice and unambiguous. */
        if (strncmp(src, "file://", 7) == 0)
            src += 7;
        else if (strncmp(src, "file:", 5) == 0)
            src += 5;
        if (src[0] != '/')
            return p11n_token_errorf(P11N_ERR_URI, safe,
                "pin-source must be file:/ABSOLUTE/PATH");
        return read_pin_file(src, safe, pin, cap, len);
    }
    pthread_mutex_lock(&pin_lock);
    p11n_pin_callback cb = pin_cb;
    void *arg = pin_cb_arg;
    pthread_mutex_unlock(&pin_lock);
    if (cb != NULL) {
        memset(pin, 0, cap);
        if (cb(safe, pin, cap, arg) != 0) {
            p11n_wipe(pin, cap);
            return p11n_token_errorf(P11N_ERR_PIN_REQUIRED, safe,
                "no PIN: the URI has no pin-value or pin-source, and the PIN callback gave none");
        }
        size_t n = p11n_ct_strnlen(pin, cap);
        p11n_declassify(&n, sizeof(n));   /* public: it goes to C_Login */
        if (n == cap) {
            p11n_wipe(pin, cap);
            return p11n_token_errorf(P11N_ERR_URI, safe, "PIN from callback too long");
        }
        *len = n;
        return P11N_OK;
    }
    if (protected_path)
        return P11N_OK;
    return p11n_token_errorf(P11N_ERR_PIN_REQUIRED, safe,
        "token PIN required: add pin-value or pin-source to the URI");
}
