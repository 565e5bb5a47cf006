/* Socket options of connection sockets (tcpopt.h). */
#include "tcpopt.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

int p11n_tcp_setup(const p11n_ctx *ctx, int fd)
{
    int one = 1, rc = 0;
    rc |= setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (ctx->opt.keepalive_idle_s < 0)
        return rc;
    rc |= setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    /* A table: (option, value) for the knobs this system has. */
    const struct {
        int opt;
        int val;
    } knobs[] = {
#ifdef TCP_KEEPIDLE
        { TCP_KEEPIDLE, ctx->opt.keepalive_idle_s },
#endif
#ifdef TCP_KEEPINTVL
        { TCP_KEEPINTVL, (int)ctx->opt.keepalive_interval_s },
#endif
#ifdef TCP_KEEPCNT
        { TCP_KEEPCNT, (int)ctx->opt.keepalive_count },
#endif
    };
    for (size_t i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++)
        rc |= setsockopt(fd, IPPROTO_TCP, knobs[i].opt, &knobs[i].val, sizeof(knobs[i].val));
    return rc == 0 ? 0 : -1;
}
