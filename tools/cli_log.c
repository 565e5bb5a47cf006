/*
 * The log lines of the commands that run a context: the library's own
 * lines (through its callback) and the command's, in one of three forms.
 *
 *   text     "2026-01-02T03:04:05.678Z p11noise info: LINE" (a terminal, a file)
 *   journal  "<6>LINE": the journal adds its own time stamp and reads
 *            the priority from the prefix (sd-daemon(3))
 *   json     one object per line: {"ts":..., "level":..., "event":...,
 *            "conn":..., "peer":..., "addr":..., "reason":..., "text":...}.
 *            "event" and "conn" come from the library's log record where
 *            it names them, else they are read back from the text (the
 *            table below); "peer", "addr" and "reason" come from the
 *            record alone (connection events: established, closed,
 *            failed, revoked). A field neither says is absent; the
 *            command's own lines name their event (reload, stop, error).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "p11noise.h"

int cli_log_level = P11N_LOG_INFO;
int cli_log_format = CLI_LOG_TEXT;

/* Per level (index = enum p11n_log_level): its name, and its syslog
 * priority for the journal. */
static const struct {
    const char *name;
    int priority;
} levels[] = {
    { "debug", 7 }, { "error", 3 }, { "warn", 4 }, { "info", 6 }, { "debug", 7 },
};

/* Library lines by what they report: the first row whose text is in the
 * line names its event. */
static const struct {
    const char *text;
    const char *event;
} events[] = {
    { "peer key revoked", "revoked" },
    { "handshake complete", "established" },
    { " failed during ", "failed" },
    { " closed: ", "closed" },
    { "will reconnect", "reconnect" },
    { "incoming from", "incoming" },
    { "listening on ", "listening" },
    { "ceremony object", "ceremony" },
    { "peers", "peers" },
};

static const char *event_of(const char *line)
{
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++)
        if (strstr(line, events[i].text) != NULL)
            return events[i].event;
    return NULL;
}

static const char *const formats[] = {
    [CLI_LOG_TEXT] = "text", [CLI_LOG_JOURNAL] = "journal", [CLI_LOG_JSON] = "json",
};

int cli_log_format_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (strcmp(name, formats[i]) == 0)
            return (int)i;
    return -1;
}

/* Whether stderr is the journal: JOURNAL_STREAM holds "DEV:INODE" of the
 * stream systemd connected, which must still be our stderr (a child whose
 * stderr was redirected inherits the variable). */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void cli_log_init(int verbose)
{
    cli_log_level = verbose ? P11N_LOG_DEBUG : P11N_LOG_INFO;
    cli_log_format = stderr_is_journal() ? CLI_LOG_JOURNAL : CLI_LOG_TEXT;
}

/* `s` as a JSON string, escaped, into f. */
static void put_json(FILE *f, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u00%c%c", hex[*p >> 4], hex[*p & 15]);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* What a JSON line says beside its text; NULL or 0: absent. */
struct fields {
    const char *event;
    unsigned long conn;
    const char *peer, *addr, *reason;
};

/* ,"name":"value", escaped (a reason may hold the peer's words, e.g. a
 * proxy's, or a file name); nothing for NULL. */
static void put_str(FILE *f, const char *name, const char *value)
{
    if (value == NULL)
        return;
    fprintf(f, ",\"%s\":", name);
    put_json(f, value);
}

static void emit(int level, const struct fields *fl, const char *line)
{
    if (level > cli_log_level)
        return;
    int lv = level >= 1 && level <= 4 ? level : 0;
    if (cli_log_format == CLI_LOG_JOURNAL) {
        fprintf(stderr, "<%d>%s\n", levels[lv].priority, line);
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    if (cli_log_format == CLI_LOG_TEXT) {
        fprintf(stderr, "%s.%03ldZ p11noise %s: %s\n", stamp, ts.tv_nsec / 1000000L,
            levels[lv].name, line);
        return;
    }
    /* Built in memory, written with one call: a line is never split. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return;
    fprintf(f, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\"", stamp, ts.tv_nsec / 1000000L,
        levels[lv].name);
    put_str(f, "event", fl->event);
    if (fl->conn != 0)
        fprintf(f, ",\"conn\":%lu", fl->conn);
    put_str(f, "peer", fl->peer);
    put_str(f, "addr", fl->addr);
    put_str(f, "reason", fl->reason);
    fputs(",\"text\":", f);
    put_json(f, line);
    fputs("}\n", f);
    fclose(f);
    fwrite(buf, 1, len, stderr);
    free(buf);
}

/* The record's event and connection where the library names them;
 * elsewhere they are read back from the text (the table above). */
void cli_log_record(const p11n_log_record *r, void *arg)
{
    (void)arg;
    struct fields fl = { .event = r->event, .conn = r->conn_id };
    /* A library older than the fields has a smaller record. */
    if (r->size >= offsetof(p11n_log_record, reason) + sizeof(r->reason)) {
        fl.peer = r->peer;
        fl.addr = r->addr;
        fl.reason = r->reason;
    }
    if (cli_log_format == CLI_LOG_JSON && fl.event == NULL)
        fl.event = event_of(r->text);
    if (fl.conn == 0 && sscanf(r->text, "conn #%lu", &fl.conn) != 1)
        fl.conn = 0;
    emit(r->level, &fl, r->text);
}

void cli_log_event(int level, const char *event, const char *fmt, ...)
{
    if (level > cli_log_level)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    struct fields fl = { .event = event };
    emit(level, &fl, line);
}

long long cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
