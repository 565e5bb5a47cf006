/*
 * Many connections in one process, and established connections while
 * handshakes wait on a slow token: both need the event loop.
 */
#include "bench.h"

void bench_group_conns(const bench_opts *o)
{
    (void)o;
    bench_table_missing("1,000 / 10,000 idle connections", "networking API not available yet");
}

void bench_group_slowtoken(const bench_opts *o, const char *module)
{
    (void)o;
    (void)module;
    bench_table_missing("RTT p99 with a 100 ms token", "networking API not available yet");
}
