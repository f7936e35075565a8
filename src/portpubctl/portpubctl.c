/* portpubctl: publish, list and watch the host ports of sandboxes through portpubd */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "macro.h"

/* Exit status for a command line that is wrong before anything was asked of the daemon. */
#define EXIT_USAGE 2

typedef enum JsonMode { JSON_OFF, JSON_PRETTY, JSON_SHORT } JsonMode;

static BusKind arg_bus = BUS_SYSTEM;
static const char *arg_address;
static bool arg_legend = true;
static JsonMode arg_json = JSON_OFF;
static bool arg_ask_password = true;
static const char *arg_guests[2];
static size_t arg_n_guests;
static bool arg_has_max_sessions;
static uint32_t arg_max_sessions;
static bool arg_has_idle_timeout;
static uint64_t arg_idle_timeout_usec;
static const char *arg_proxy_protocol;
static bool arg_bind_to_caller;
static bool arg_varlink;
static const char *arg_varlink_path; /* NULL: the default of --system or --user */

/* Set when the command line is wrong: exit 2 rather than 1. */
static bool usage_failed;
bool daemon_unreachable;

/* Messages */

int log_error_errno(int error, const char *format, ...) {
        int e = error < 0 ? -error : error;
        va_list ap;

        fputs("portpubctl: ", stderr);
        va_start(ap, format);
        errno = e;
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
        return e ? -e : -EINVAL;
}

#define log_usage(...) (usage_failed = true, log_error_errno(EINVAL, __VA_ARGS__))

/* Parsing the command line */

/* Prints what a parser of spec.c found wrong: exit 2 then. */
static int log_parse_error(int r, char *error) {
        _cleanup_free_ char *m = error;

        if (r == -ENOMEM || !m)
                return log_oom();
        return log_usage("%s", m);
}

static int parse_specs(char **specs, size_t n, SpecKind kind, PortRange **ret) {
        char *error;
        int r;

        r = spec_parse_list(specs, n, kind, ret, &error);
        if (r < 0)
                return log_parse_error(r, error);
        return 0;
}

/* Formatting */

/* "localhost:8080" for the daemon's "", "[::1]:8080", "*:53", "127.0.0.1:8080". */
static const char *format_host_port(const char *address, uint16_t port, char *buf, size_t size) {
        if (address[0] == 0)
                snprintf(buf, size, "localhost:%u", port);
        else if (strchr(address, ':'))
                snprintf(buf, size, "[%s]:%u", address, port);
        else
                snprintf(buf, size, "%s:%u", address, port);
        return buf;
}

#define HOST_PORT_MAX (INET6_ADDRSTRLEN + sizeof("[]:65535"))
#define DECIMAL_MAX sizeof("18446744073709551615")

/* A table of text cells, columns as wide as their widest cell. */
typedef struct Table {
        const char *const *header;
        size_t n_columns;
        unsigned right_aligned; /* bit i: column i */
        char **cells; /* row after row */
        size_t n_cells, allocated;
} Table;

static void table_done(Table *t) {
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
}

/* Adds a row: t->n_columns strings, copied. */
static int table_add_row(Table *t, ...) {
        va_list ap;
        int r = 0;

        if (t->n_cells + t->n_columns > t->allocated) {
                size_t na = MAX(t->allocated * 2, t->n_columns * 16);
                char **c = reallocarray(t->cells, na, sizeof *c);

                if (!c)
                        return log_oom();
                t->cells = c;
                t->allocated = na;
        }
        va_start(ap, t);
        for (size_t i = 0; i < t->n_columns; i++) {
                t->cells[t->n_cells + i] = strdup(va_arg(ap, const char *));
                if (!t->cells[t->n_cells + i])
                        r = -ENOMEM;
        }
        va_end(ap);
        t->n_cells += t->n_columns; /* a failed strdup() left a NULL: table_done() copes */
        return r < 0 ? log_oom() : 0;
}

static size_t table_rows(const Table *t) {
        return t->n_cells / t->n_columns;
}

static int table_print(const Table *t, bool legend) {
        _cleanup_free_ size_t *width = calloc(t->n_columns, sizeof *width);

        if (!width)
                return log_oom();
        for (size_t c = 0; c < t->n_columns; c++)
                width[c] = legend ? strlen(t->header[c]) : 0;
        for (size_t i = 0; i < t->n_cells; i++)
                width[i % t->n_columns] = MAX(width[i % t->n_columns], strlen(t->cells[i]));

        for (size_t row = legend ? 0 : 1; row <= table_rows(t); row++)
                for (size_t c = 0; c < t->n_columns; c++) {
                        const char *s =
                                row == 0 ? t->header[c] : t->cells[(row - 1) * t->n_columns + c];
                        bool last = c + 1 == t->n_columns;

                        if (t->right_aligned & (1U << c))
                                printf("%*s", (int) width[c], s);
                        else if (last)
                                fputs(s, stdout);
                        else
                                printf("%-*s", (int) width[c], s);
                        fputs(last ? "\n" : " ", stdout);
                }
        return 0;
}

/* "512B", "1.2K", "3.0M": bytes in IEC units, one decimal, as systemctl prints them. */
static const char *format_bytes(uint64_t n, char *buf, size_t size) {
        static const char suffixes[] = "KMGTPE";
        uint64_t factor = 1024;
        size_t i = 0;

        if (n < 1024) {
                snprintf(buf, size, "%" PRIu64 "B", n);
                return buf;
        }
        while (i + 1 < strlen(suffixes) && n / factor >= 1024) {
                factor *= 1024;
                i++;
        }
        snprintf(buf, size, "%" PRIu64 ".%" PRIu64 "%c", n / factor, (n % factor) * 10 / factor,
                 suffixes[i]);
        return buf;
}

#define BYTES_MAX sizeof("1023.9E")

/* "1min 30s", "250ms", "0": a duration as systemctl prints it. */
static const char *format_timespan(uint64_t usec, char *buf, size_t size) {
        static const struct {
                const char *suffix;
                uint64_t factor;
        } units[] = {
                { "d", 24 * 3600 * USEC_PER_SEC }, { "h", 3600 * USEC_PER_SEC },
                { "min", 60 * USEC_PER_SEC },      { "s", USEC_PER_SEC },
                { "ms", USEC_PER_MSEC },           { "us", 1 },
        };
        size_t at = 0;

        buf[0] = 0;
        if (usec == 0) {
                snprintf(buf, size, "0");
                return buf;
        }
        for (size_t i = 0; i < ELEMENTSOF(units) && at < size; i++) {
                uint64_t n = usec / units[i].factor;

                if (n == 0)
                        continue;
                at += (size_t) snprintf(buf + at, size - at, "%s%" PRIu64 "%s", at > 0 ? " " : "",
                                        n, units[i].suffix);
                usec -= n * units[i].factor;
        }
        return buf;
}

#define TIMESPAN_MAX sizeof("213503982d 23h 59min 59s 999ms 999us")

/* JSON output (--json): snake_case field names, numbers as numbers; man/portpubctl.1 lists them. */

static void json_object_putp(json_object **o) {
        json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

/* json_object_object_add() that takes value also on failure, and fails for a NULL one. */
static int json_put(json_object *o, const char *key, json_object *value) {
        if (!value)
                return -ENOMEM;
        if (json_object_object_add(o, key, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

static int json_put_string(json_object *o, const char *key, const char *value) {
        return json_put(o, key, json_object_new_string(value ? value : ""));
}

static int json_put_uint(json_object *o, const char *key, uint64_t value) {
        return json_put(o, key, json_object_new_uint64(value));
}

static int json_append(json_object *array, json_object *value) {
        if (!value)
                return -ENOMEM;
        if (json_object_array_add(array, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

/* s split at sep into a JSON array of strings; "" is []. */
static json_object *json_split(const char *s, char sep) {
        json_object *a = json_object_new_array();

        while (a && *s) {
                size_t n = strcspn(s, (const char[]){ sep, 0 });

                if (json_append(a, json_object_new_string_len(s, (int) n)) < 0) {
                        json_object_put(a);
                        return NULL;
                }
                s += n;
                if (*s)
                        s++;
        }
        return a;
}

/* Prints o on a line of its own (--json=short) or indented (--json, --json=pretty), and
 * flushes, for whoever reads it through a pipe. Takes o. */
static int json_print(json_object *o) {
        _cleanup_json_ json_object *owned = o;
        int flags = JSON_C_TO_STRING_NOSLASHESCAPE |
                    (arg_json == JSON_SHORT ? JSON_C_TO_STRING_PLAIN
                                            : JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
        const char *text;

        if (!o)
                return log_oom();
        text = json_object_to_json_string_ext(o, flags);
        if (!text)
                return log_oom();
        if (puts(text) < 0 || fflush(stdout) != 0)
                return log_error_errno(errno, "Failed to write to standard output: %m");
        return 0;
}

/* What the daemon answers */

int array_grow(void **array, size_t *allocated, size_t need, size_t size) {
        size_t na;
        void *p;

        if (need <= *allocated)
                return 0;
        na = MAX(need, MAX(*allocated * 2, (size_t) 16));
        p = reallocarray(*array, na, size);
        if (!p)
                return -ENOMEM;
        *array = p;
        *allocated = na;
        return 0;
}

/* Copies the strings *fields[0..n) (NULL as "") into one allocation and points each field at
 * its copy; returns the allocation, NULL when out of memory (the fields are unchanged then). */
static char *pack_strings(const char **const fields[], size_t n) {
        size_t size = 0;
        char *block, *p;

        for (size_t i = 0; i < n; i++)
                size += strlen(*fields[i] ? *fields[i] : "") + 1;
        block = malloc(size);
        if (!block)
                return NULL;
        p = block;
        for (size_t i = 0; i < n; i++) {
                const char *s = *fields[i] ? *fields[i] : "";
                size_t len = strlen(s) + 1;

                memcpy(p, s, len);
                *fields[i] = p;
                p += len;
        }
        return block;
}

int port_list_add(PortList *l, const PortEntry *e) {
        PortEntry c = *e;
        const char **const fields[] = { &c.sandbox,       &c.protocol,       &c.host_address,
                                        &c.guest_address, &c.state,          &c.path,
                                        &c.last_error,    &c.proxy_protocol, &c.listen_addresses };

        if (array_grow((void **) &l->entries, &l->allocated, l->n + 1, sizeof *l->entries) < 0)
                return log_oom();
        c.strings = pack_strings(fields, ELEMENTSOF(fields));
        if (!c.strings)
                return log_oom();
        l->entries[l->n++] = c;
        return 0;
}

void port_list_done(PortList *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->entries[i].strings);
        l->entries = mfree(l->entries);
        l->n = l->allocated = 0;
}

char *strings_join(const char *const *l, size_t n, char sep) {
        size_t size = 1, at = 0;
        char *s;

        for (size_t i = 0; i < n; i++)
                size += strlen(l[i]) + 1;
        s = malloc(size);
        if (!s)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(l[i]);

                if (i > 0)
                        s[at++] = sep;
                memcpy(s + at, l[i], len);
                at += len;
        }
        s[at] = 0;
        return s;
}

int sandbox_list_add(SandboxList *l, const SandboxEntry *e, const char *const *guest_addresses,
                     size_t n_guest_addresses) {
        _cleanup_free_ char *joined = strings_join(guest_addresses, n_guest_addresses, ',');
        SandboxEntry c = *e;
        const char **const fields[] = { &c.id, &c.path, &c.guest_addresses };

        if (!joined)
                return log_oom();
        c.guest_addresses = joined;
        if (array_grow((void **) &l->entries, &l->allocated, l->n + 1, sizeof *l->entries) < 0)
                return log_oom();
        c.strings = pack_strings(fields, ELEMENTSOF(fields));
        if (!c.strings)
                return log_oom();
        l->entries[l->n++] = c;
        return 0;
}

void sandbox_list_done(SandboxList *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->entries[i].strings);
        l->entries = mfree(l->entries);
        l->n = l->allocated = 0;
}

int published_list_add(PublishedList *l, const char *protocol, const char *host_address,
                       uint16_t host_port, uint16_t guest_port, const char *path) {
        PublishedPort c = { .protocol = protocol,
                            .host_address = host_address,
                            .path = path,
                            .host_port = host_port,
                            .guest_port = guest_port };
        const char **const fields[] = { &c.protocol, &c.host_address, &c.path };

        if (array_grow((void **) &l->entries, &l->allocated, l->n + 1, sizeof *l->entries) < 0)
                return log_oom();
        c.strings = pack_strings(fields, ELEMENTSOF(fields));
        if (!c.strings)
                return log_oom();
        l->entries[l->n++] = c;
        return 0;
}

void published_list_done(PublishedList *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->entries[i].strings);
        l->entries = mfree(l->entries);
        l->n = l->allocated = 0;
}

void daemon_status_done(DaemonStatus *s) {
        s->version = mfree(s->version);
}

int property_list_add(PropertyList *l, const char *name, char *value) {
        _cleanup_free_ char *v = value;
        char *n;

        if (array_grow((void **) &l->entries, &l->allocated, l->n + 1, sizeof *l->entries) < 0)
                return log_oom();
        n = strdup(name);
        if (!n)
                return log_oom();
        l->entries[l->n++] = (Property){ .name = n, .value = TAKE_PTR(v) };
        return 0;
}

void property_list_done(PropertyList *l) {
        for (size_t i = 0; i < l->n; i++) {
                free(l->entries[i].name);
                free(l->entries[i].value);
        }
        l->entries = mfree(l->entries);
        l->n = l->allocated = 0;
}

bool sandbox_selected(const char *id, char *const *filter, size_t n_filter) {
        if (n_filter == 0)
                return true;
        for (size_t i = 0; i < n_filter; i++)
                if (strcmp(filter[i], id) == 0)
                        return true;
        return false;
}

/* The daemon */

static int daemon_open(Daemon **ret) {
        _cleanup_free_ char *path = NULL;
        const char *runtime;

        if (!arg_varlink)
                return dbus_daemon_open(ret, arg_bus, arg_address, arg_ask_password);
        if (arg_varlink_path)
                return varlink_daemon_open(ret, arg_varlink_path);
        if (arg_bus != BUS_USER)
                return varlink_daemon_open(ret, VARLINK_SOCKET_DEFAULT);
        /* Where portpubd --user serves it. */
        runtime = getenv("XDG_RUNTIME_DIR");
        if (!runtime || runtime[0] != '/')
                return log_error_errno(
                        ENXIO,
                        "No $XDG_RUNTIME_DIR for the user's varlink socket: give --varlink=PATH.");
        if (asprintf(&path, "%s/portpub/%s", runtime, VARLINK_INTERFACE) < 0) {
                path = NULL; /* undefined after a failure */
                return log_oom();
        }
        return varlink_daemon_open(ret, path);
}

/* Blocks SIGINT and SIGTERM and returns a signalfd for them, so that a signal ends a wait loop
 * cleanly whenever it comes, also before the loop started. */
static int signals_block(void) {
        sigset_t mask;
        int fd;

        /* A blocked signal whose action is to ignore it is dropped, not queued: a shell starts
         * background commands with SIGINT ignored. */
        if (signal(SIGINT, SIG_DFL) == SIG_ERR || signal(SIGTERM, SIG_DFL) == SIG_ERR)
                return log_error_errno(errno, "Failed to reset signal handlers: %m");
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m");
        fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (fd < 0)
                return log_error_errno(errno, "Failed to create a signalfd: %m");
        return fd;
}

/* Verbs: each asks the daemon through its transport, and prints what the transport filled in. */

static int port_entry_compare(const void *a, const void *b) {
        const PortEntry *x = a, *y = b;
        int c = strcmp(x->sandbox, y->sandbox);

        if (c != 0)
                return c;
        if (x->host_port != y->host_port)
                return x->host_port < y->host_port ? -1 : 1;
        c = strcmp(x->protocol, y->protocol);
        if (c != 0)
                return c;
        return strcmp(x->host_address, y->host_address);
}

/* The guest end of a port: "10.0.0.2:80", "-:80" while the sandbox has no address for it. */
static const char *format_guest(const PortEntry *e, char *buf, size_t size) {
        if (e->guest_address[0] == 0)
                snprintf(buf, size, "-:%u", e->guest_port);
        else
                format_host_port(e->guest_address, e->guest_port, buf, size);
        return buf;
}

static json_object *port_to_json(const PortEntry *e) {
        _cleanup_json_ json_object *o = json_object_new_object();
        char host[HOST_PORT_MAX];

        if (!o || json_put_string(o, "sandbox", e->sandbox) < 0 ||
            json_put_string(o, "protocol", e->protocol) < 0 ||
            json_put_string(o, "host",
                            format_host_port(e->host_address, e->host_port, host, sizeof host)) < 0 ||
            json_put_string(o, "host_address", e->host_address) < 0 ||
            json_put_uint(o, "host_port", e->host_port) < 0 ||
            json_put(o, "listen_addresses", json_split(e->listen_addresses, ' ')) < 0 ||
            json_put_string(o, "guest_address", e->guest_address) < 0 ||
            json_put_uint(o, "guest_port", e->guest_port) < 0 ||
            json_put_string(o, "state", e->state) < 0 ||
            json_put_string(o, "last_error", e->last_error) < 0 ||
            json_put_uint(o, "active_sessions", e->active_sessions) < 0 ||
            json_put_uint(o, "total_sessions", e->total_sessions) < 0 ||
            json_put_uint(o, "rejected_sessions", e->rejected_sessions) < 0 ||
            json_put_uint(o, "failed_sessions", e->failed_sessions) < 0 ||
            json_put_uint(o, "bytes_to_guest", e->bytes_to_guest) < 0 ||
            json_put_uint(o, "bytes_from_guest", e->bytes_from_guest) < 0 ||
            json_put_uint(o, "idle_timeout_usec", e->idle_timeout_usec) < 0 ||
            json_put_uint(o, "max_sessions", e->max_sessions) < 0 ||
            json_put_string(o, "proxy_protocol", e->proxy_protocol) < 0 ||
            json_put_string(o, "object_path", e->path) < 0)
                return NULL;
        return TAKE_PTR(o);
}

/* The ports of sandbox (NULL: all) as a JSON array. */
static json_object *ports_to_json(const PortList *l, const char *sandbox) {
        _cleanup_json_ json_object *a = json_object_new_array();

        for (size_t i = 0; a && i < l->n; i++)
                if ((!sandbox || strcmp(l->entries[i].sandbox, sandbox) == 0) &&
                    json_append(a, port_to_json(&l->entries[i])) < 0)
                        return NULL;
        return TAKE_PTR(a);
}

static void sort_ports(PortList *l) {
        if (l->n > 0)
                qsort(l->entries, l->n, sizeof *l->entries, port_entry_compare);
}

static int print_ports(PortList *l) {
        static const char *const header[] = { "SANDBOX", "PROTO",  "HOST", "GUEST",
                                              "STATE",   "ACTIVE", "TOTAL" };
        _cleanup_(table_done) Table t = {
                .header = header, .n_columns = ELEMENTSOF(header), .right_aligned = 0x60, /* the counters */
        };
        int r;

        sort_ports(l);
        if (arg_json != JSON_OFF)
                return json_print(ports_to_json(l, NULL));
        for (size_t i = 0; i < l->n; i++) {
                const PortEntry *e = &l->entries[i];
                char host[HOST_PORT_MAX], guest[HOST_PORT_MAX];
                char active[DECIMAL_MAX], total[DECIMAL_MAX];

                snprintf(active, sizeof active, "%" PRIu32, e->active_sessions);
                snprintf(total, sizeof total, "%" PRIu64, e->total_sessions);
                r = table_add_row(&t, e->sandbox, e->protocol,
                                  format_host_port(e->host_address, e->host_port, host, sizeof host),
                                  format_guest(e, guest, sizeof guest), e->state, active, total);
                if (r < 0)
                        return r;
        }

        if (table_rows(&t) == 0) {
                if (arg_legend)
                        printf("No ports published.\n");
                return 0;
        }
        r = table_print(&t, arg_legend);
        if (r < 0)
                return r;
        if (arg_legend)
                printf("\n%zu port%s listed.\n", table_rows(&t), table_rows(&t) == 1 ? "" : "s");
        return 0;
}

static int verb_list(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        _cleanup_(port_list_done) PortList l = {};
        int r;

        r = daemon_open(&d);
        if (r < 0)
                return r;
        r = d->ops->list_ports(d, argv + 1, (size_t) argc - 1, &l);
        if (r < 0)
                return r;
        return print_ports(&l);
}

static int sandbox_entry_compare(const void *a, const void *b) {
        return strcmp(((const SandboxEntry *) a)->id, ((const SandboxEntry *) b)->id);
}

static json_object *sandbox_to_json(const SandboxEntry *e) {
        _cleanup_json_ json_object *o = json_object_new_object();

        if (!o || json_put_string(o, "sandbox", e->id) < 0 ||
            json_put(o, "guest_addresses", json_split(e->guest_addresses, ',')) < 0 ||
            json_put_uint(o, "owner", e->owner) < 0 ||
            json_put(o, "machine", json_object_new_boolean(e->machine)) < 0 ||
            json_put_uint(o, "n_ports", e->n_ports) < 0 ||
            json_put_uint(o, "active_sessions", e->active_sessions) < 0 ||
            json_put_string(o, "object_path", e->path) < 0)
                return NULL;
        return TAKE_PTR(o);
}

static void sort_sandboxes(SandboxList *l) {
        if (l->n > 0)
                qsort(l->entries, l->n, sizeof *l->entries, sandbox_entry_compare);
}

static int print_sandboxes(SandboxList *l) {
        static const char *const header[] = { "SANDBOX", "PORTS", "GUEST-ADDRESSES" };
        _cleanup_(table_done) Table t = {
                .header = header,
                .n_columns = ELEMENTSOF(header),
                .right_aligned = 0x2,
        };
        int r;

        sort_sandboxes(l);
        if (arg_json != JSON_OFF) {
                _cleanup_json_ json_object *a = json_object_new_array();

                for (size_t i = 0; a && i < l->n; i++)
                        if (json_append(a, sandbox_to_json(&l->entries[i])) < 0)
                                return log_oom();
                return json_print(TAKE_PTR(a));
        }
        for (size_t i = 0; i < l->n; i++) {
                const SandboxEntry *e = &l->entries[i];
                char n_ports[DECIMAL_MAX];

                snprintf(n_ports, sizeof n_ports, "%" PRIu32, e->n_ports);
                r = table_add_row(&t, e->id, n_ports,
                                  e->guest_addresses[0] ? e->guest_addresses : "-");
                if (r < 0)
                        return r;
        }

        if (table_rows(&t) == 0) {
                if (arg_legend)
                        printf("No sandboxes.\n");
                return 0;
        }
        r = table_print(&t, arg_legend);
        if (r < 0)
                return r;
        if (arg_legend)
                printf("\n%zu sandbox%s listed.\n", table_rows(&t), table_rows(&t) == 1 ? "" : "es");
        return 0;
}

static int verb_sandboxes(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        _cleanup_(sandbox_list_done) SandboxList l = {};
        int r;

        r = daemon_open(&d);
        if (r < 0)
                return r;
        r = d->ops->list_sandboxes(d, &l);
        if (r < 0)
                return r;
        return print_sandboxes(&l);
}

static int print_published(const char *sandbox, const PublishedList *l) {
        _cleanup_json_ json_object *a = NULL;

        if (arg_json == JSON_OFF) {
                for (size_t i = 0; i < l->n; i++) {
                        const PublishedPort *p = &l->entries[i];
                        char listen[HOST_PORT_MAX];

                        printf("%s %s -> %u (%s)\n", p->protocol,
                               format_host_port(p->host_address, p->host_port, listen, sizeof listen),
                               p->guest_port, p->path);
                }
                return 0;
        }
        a = json_object_new_array();
        for (size_t i = 0; a && i < l->n; i++) {
                const PublishedPort *p = &l->entries[i];
                _cleanup_json_ json_object *o = json_object_new_object();
                char host[HOST_PORT_MAX];

                if (!o || json_put_string(o, "sandbox", sandbox) < 0 ||
                    json_put_string(o, "protocol", p->protocol) < 0 ||
                    json_put_string(o, "host",
                                    format_host_port(p->host_address, p->host_port, host,
                                                     sizeof host)) < 0 ||
                    json_put_string(o, "host_address", p->host_address) < 0 ||
                    json_put_uint(o, "host_port", p->host_port) < 0 ||
                    json_put_uint(o, "guest_port", p->guest_port) < 0 ||
                    json_put_string(o, "object_path", p->path) < 0 || json_append(a, TAKE_PTR(o)) < 0)
                        return log_oom();
        }
        return json_print(TAKE_PTR(a));
}

static int verb_publish(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        _cleanup_(published_list_done) PublishedList l = {};
        _cleanup_close_ int signal_fd = -EBADF;
        _cleanup_free_ PortRange *ranges = NULL;
        PublishArgs a;
        int r;

        r = parse_specs(argv + 2, (size_t) argc - 2, SPEC_PUBLISH, &ranges);
        if (r < 0)
                return r;
        if (arg_bind_to_caller) {
                /* The ports live as long as this process: end it cleanly on a signal. */
                signal_fd = signals_block();
                if (signal_fd < 0)
                        return signal_fd;
        }

        r = daemon_open(&d);
        if (r < 0)
                return r;
        a = (PublishArgs){
                .sandbox = argv[1],
                .guests = arg_guests,
                .n_guests = arg_n_guests,
                .ranges = ranges,
                .n_ranges = (size_t) argc - 2,
                .has_max_sessions = arg_has_max_sessions,
                .max_sessions = arg_max_sessions,
                .has_idle_timeout = arg_has_idle_timeout,
                .idle_timeout_usec = arg_idle_timeout_usec,
                .proxy_protocol = arg_proxy_protocol,
                .bind_to_caller = arg_bind_to_caller,
        };
        r = d->ops->publish(d, &a, &l);
        if (r < 0)
                return r;
        r = print_published(a.sandbox, &l);
        if (r < 0 || !arg_bind_to_caller)
                return r;
        if (fflush(stdout) != 0)
                return log_error_errno(errno, "Failed to write to standard output: %m");
        /* Also when not on a terminal: a script's log says why the command does not return. */
        fprintf(stderr,
                "Published while portpubctl runs; press Ctrl-C or send SIGTERM to unpublish.\n");
        return d->ops->hold(d, signal_fd);
}

static int verb_unpublish(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        _cleanup_free_ PortRange *ranges = NULL;
        int r;

        r = parse_specs(argv + 2, (size_t) argc - 2, SPEC_PORT, &ranges);
        if (r < 0)
                return r;
        r = daemon_open(&d);
        if (r < 0)
                return r;
        return d->ops->unpublish(d, argv[1], ranges, (size_t) argc - 2);
}

static int verb_remove(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        int r;

        r = daemon_open(&d);
        if (r < 0)
                return r;
        for (int i = 1; i < argc; i++) {
                r = d->ops->remove_sandbox(d, argv[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int verb_set_guest(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        int r;

        r = daemon_open(&d);
        if (r < 0)
                return r;
        return d->ops->set_guest_addresses(d, argv[1], argv + 2);
}

static void print_properties(const PropertyList *l) {
        for (size_t i = 0; i < l->n; i++)
                printf("%s=%s\n", l->entries[i].name, l->entries[i].value);
}

static json_object *daemon_status_to_json(const DaemonStatus *st) {
        _cleanup_json_ json_object *o = json_object_new_object();

        if (!o || json_put_string(o, "version", st->version) < 0 ||
            json_put_uint(o, "n_sandboxes", st->n_sandboxes) < 0 ||
            json_put_uint(o, "n_ports", st->n_ports) < 0 ||
            json_put_uint(o, "active_sessions", st->active_sessions) < 0 ||
            json_put_uint(o, "total_sessions", st->total_sessions) < 0 ||
            json_put_uint(o, "default_max_sessions", st->default_max_sessions) < 0 ||
            json_put_uint(o, "default_udp_idle_timeout_usec", st->default_udp_idle_timeout_usec) < 0)
                return NULL;
        return TAKE_PTR(o);
}

static int show_port_json(Daemon *d, const PortRange *p) {
        _cleanup_(port_list_done) PortList l = {};
        int r;

        r = d->ops->get_port(d, p, &l);
        if (r < 0)
                return r;
        if (l.n != 1)
                return log_error_errno(EBADMSG, "The daemon answered for %zu ports, not one.", l.n);
        return json_print(port_to_json(&l.entries[0]));
}

static int show_daemon_json(Daemon *d) {
        _cleanup_(daemon_status_done) DaemonStatus st = {};
        int r;

        r = d->ops->get_status(d, &st);
        if (r < 0)
                return r;
        return json_print(daemon_status_to_json(&st));
}

static int verb_show(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        _cleanup_(property_list_done) PropertyList l = {};
        PortRange p;
        int r;

        if (argc > 1) {
                char *error;

                r = spec_parse(argv[1], SPEC_PORT, &p, &error);
                if (r < 0)
                        return log_parse_error(r, error);
                if (p.host_first != p.host_last)
                        return log_usage("Invalid port '%s': show takes one port, not a range.",
                                         argv[1]);
        }
        r = daemon_open(&d);
        if (r < 0)
                return r;
        if (arg_json != JSON_OFF)
                return argc > 1 ? show_port_json(d, &p) : show_daemon_json(d);
        if (argc > 1)
                r = d->ops->show_port(d, &p, &l);
        else
                r = d->ops->show_daemon(d, &l);
        if (r < 0)
                return r;
        print_properties(&l);
        return 0;
}

/* status */

static void print_field(int width, const char *label, const char *format, ...) _printf_(3, 4);
static void print_field(int width, const char *label, const char *format, ...) {
        va_list ap;

        printf("%*s: ", width, label);
        va_start(ap, format);
        vprintf(format, ap);
        va_end(ap);
        fputc('\n', stdout);
}

#define DAEMON_LABEL_WIDTH ((int) sizeof("UDP idle timeout") - 1)

static int print_daemon_status(Daemon *d) {
        _cleanup_(daemon_status_done) DaemonStatus st = {};
        char timespan[TIMESPAN_MAX];
        const int w = DAEMON_LABEL_WIDTH;
        int r;

        r = d->ops->get_status(d, &st);
        if (r < 0)
                return r;
        if (arg_json != JSON_OFF)
                return json_print(daemon_status_to_json(&st));
        print_field(w, "Version", "%s", st.version);
        print_field(w, "Sandboxes", "%" PRIu32, st.n_sandboxes);
        print_field(w, "Ports", "%" PRIu32, st.n_ports);
        print_field(w, "Sessions", "%" PRIu64 " active, %" PRIu64 " total", st.active_sessions,
                    st.total_sessions);
        print_field(w, "Max sessions", "%" PRIu32 " per port, unless published with another",
                    st.default_max_sessions);
        print_field(w, "UDP idle timeout", "%s, unless published with another",
                    format_timespan(st.default_udp_idle_timeout_usec, timespan, sizeof timespan));
        return 0;
}

/* "  Guest addresses: " */
#define SANDBOX_LABEL_WIDTH ((int) sizeof("  Guest addresses") - 1)

static void print_port_status(const PortEntry *e) {
        char host[HOST_PORT_MAX], guest[HOST_PORT_MAX], to[BYTES_MAX], from[BYTES_MAX];
        const int w = SANDBOX_LABEL_WIDTH;

        print_field(w, "Port", "%s %s -> %s", e->protocol,
                    format_host_port(e->host_address, e->host_port, host, sizeof host),
                    format_guest(e, guest, sizeof guest));
        printf("%*s  %s%s%s; sessions: %" PRIu32 " active, %" PRIu64 " total, %" PRIu64
               " rejected, %" PRIu64 " failed\n",
               w, "", e->state, e->last_error[0] ? ": " : "", e->last_error, e->active_sessions,
               e->total_sessions, e->rejected_sessions, e->failed_sessions);
        printf("%*s  %s to guest, %s from guest\n", w, "",
               format_bytes(e->bytes_to_guest, to, sizeof to),
               format_bytes(e->bytes_from_guest, from, sizeof from));
}

static void print_sandbox_status(const SandboxEntry *s, const PortList *ports) {
        const struct passwd *pw = getpwuid(s->owner);
        const int w = SANDBOX_LABEL_WIDTH;
        size_t n = 0;

        printf("%s\n", s->id);
        print_field(w, "Guest addresses", "%s", s->guest_addresses[0] ? s->guest_addresses : "none");
        print_field(w, "Owner", "uid %" PRIu32 "%s%s%s", s->owner, pw ? " (" : "",
                    pw ? pw->pw_name : "", pw ? ")" : "");
        if (s->machine)
                print_field(w, "Machine", "%s (follows systemd-machined's machine)", s->id);
        else
                print_field(w, "Machine", "none");
        print_field(w, "Sessions", "%" PRIu64 " active", s->active_sessions);
        for (size_t i = 0; i < ports->n; i++)
                n += strcmp(ports->entries[i].sandbox, s->id) == 0;
        print_field(w, "Ports", "%zu", n);
        for (size_t i = 0; i < ports->n; i++)
                if (strcmp(ports->entries[i].sandbox, s->id) == 0)
                        print_port_status(&ports->entries[i]);
}

static int verb_status(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        _cleanup_(sandbox_list_done) SandboxList sandboxes = {};
        _cleanup_(port_list_done) PortList ports = {};
        _cleanup_json_ json_object *a = NULL;
        char *const *filter = argv + 1;
        size_t n_filter = (size_t) argc - 1, shown = 0;
        int r;

        r = daemon_open(&d);
        if (r < 0)
                return r;
        if (n_filter == 0)
                return print_daemon_status(d);

        r = d->ops->list_sandboxes(d, &sandboxes);
        if (r < 0)
                return r;
        r = d->ops->list_ports(d, filter, n_filter, &ports);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_filter; i++) {
                bool found = false;

                for (size_t k = 0; !found && k < sandboxes.n; k++)
                        found = strcmp(sandboxes.entries[k].id, filter[i]) == 0;
                if (!found)
                        return log_error_errno(0, "No sandbox '%s'", filter[i]);
        }
        sort_sandboxes(&sandboxes);
        sort_ports(&ports);

        if (arg_json != JSON_OFF)
                a = json_object_new_array();
        for (size_t i = 0; i < sandboxes.n; i++) {
                const SandboxEntry *s = &sandboxes.entries[i];
                _cleanup_json_ json_object *o = NULL;

                if (!sandbox_selected(s->id, filter, n_filter))
                        continue;
                if (arg_json == JSON_OFF) {
                        if (shown++ > 0)
                                fputc('\n', stdout);
                        print_sandbox_status(s, &ports);
                        continue;
                }
                o = sandbox_to_json(s);
                if (!a || !o || json_put(o, "ports", ports_to_json(&ports, s->id)) < 0 ||
                    json_append(a, TAKE_PTR(o)) < 0)
                        return log_oom();
        }
        if (arg_json != JSON_OFF)
                return json_print(TAKE_PTR(a));
        return 0;
}

static const char *const event_names[] = {
        [MONITOR_READY] = "ready",
        [MONITOR_SANDBOX_NEW] = "sandbox_new",
        [MONITOR_SANDBOX_REMOVED] = "sandbox_removed",
        [MONITOR_PORT_PUBLISHED] = "port_published",
        [MONITOR_PORT_UNPUBLISHED] = "port_unpublished",
};

/* One line of JSON for the event. */
static void print_event_json(const MonitorEvent *e) {
        _cleanup_json_ json_object *o = json_object_new_object();
        char host[HOST_PORT_MAX];
        int r;

        r = o ? json_put_string(o, "event", event_names[e->type]) : -ENOMEM;
        if (r >= 0 && e->type != MONITOR_READY)
                r = json_put_string(o, "sandbox", e->sandbox);
        if (r >= 0 && e->type != MONITOR_READY)
                r = json_put_string(o, "object_path", e->path);
        if (r >= 0 && (e->type == MONITOR_PORT_PUBLISHED || e->type == MONITOR_PORT_UNPUBLISHED)) {
                r = json_put_string(o, "protocol", e->protocol);
                if (r >= 0)
                        r = json_put_string(o, "host",
                                            format_host_port(e->host_address, e->host_port, host,
                                                             sizeof host));
                if (r >= 0)
                        r = json_put_string(o, "host_address", e->host_address);
                if (r >= 0)
                        r = json_put_uint(o, "host_port", e->host_port);
        }
        if (r >= 0 && e->type == MONITOR_PORT_UNPUBLISHED)
                r = json_put_string(o, "reason", e->reason);
        if (r < 0) {
                log_oom();
                return;
        }
        (void) json_print(TAKE_PTR(o));
}

static void print_event(const MonitorEvent *e, void *userdata) {
        const Daemon *d = userdata;
        char listen[HOST_PORT_MAX];

        if (e->type >= ELEMENTSOF(event_names))
                return;
        if (arg_json != JSON_OFF) {
                print_event_json(e);
                return;
        }
        switch (e->type) {
        case MONITOR_READY:
                if (!arg_legend)
                        return;
                printf("Monitoring %s; press Ctrl-C to stop.\n", d->name);
                break;
        case MONITOR_SANDBOX_NEW:
                printf("SandboxNew %s %s\n", e->sandbox, e->path);
                break;
        case MONITOR_SANDBOX_REMOVED:
                printf("SandboxRemoved %s %s\n", e->sandbox, e->path);
                break;
        case MONITOR_PORT_PUBLISHED:
                printf("PortPublished %s %s %s %s\n", e->sandbox, e->protocol,
                       format_host_port(e->host_address, e->host_port, listen, sizeof listen),
                       e->path);
                break;
        case MONITOR_PORT_UNPUBLISHED:
                printf("PortUnpublished %s %s %s %s reason=%s\n", e->sandbox, e->protocol,
                       format_host_port(e->host_address, e->host_port, listen, sizeof listen),
                       e->path, e->reason);
                break;
        default:
                return;
        }
        /* Someone may be reading this line by line through a pipe. */
        fflush(stdout);
}

static int verb_monitor(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        _cleanup_close_ int signal_fd = -EBADF;
        int r;

        /* One event a line, whatever --json= says. */
        if (arg_json != JSON_OFF)
                arg_json = JSON_SHORT;
        signal_fd = signals_block();
        if (signal_fd < 0)
                return signal_fd;
        r = daemon_open(&d);
        if (r < 0)
                return r;
        return d->ops->monitor(d, signal_fd, print_event, d);
}

/* The command line */

static void help(void) {
        printf("Usage: portpubctl [OPTIONS] COMMAND ...\n\n"
               "Publishes host ports for sandboxes through portpubd.\n\n"
               "Commands:\n"
               "  list [SANDBOX...]              List published ports with their counters\n"
               "  sandboxes                      List sandboxes with their guest addresses\n"
               "  publish SANDBOX SPEC...        Publish ports, all or none\n"
               "  unpublish SANDBOX PORT...      Unpublish ports\n"
               "  remove SANDBOX...              Unpublish all ports of sandboxes, forget them\n"
               "  set-guest SANDBOX ADDRESS...   Set a sandbox's guest addresses\n"
               "  status [SANDBOX...]            Show sandboxes with their ports and counters\n"
               "                                 (or the daemon's figures)\n"
               "  show [PORT]                    Show a port's properties (or the daemon's)\n"
               "  monitor                        Print publications as they happen\n\n"
               "SPEC is [HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp], as docker run -p takes;\n"
               "PORT is [HOST_ADDR:]HOST_PORT[/tcp|/udp]. Ports may be ranges N-M of equal\n"
               "length. HOST_ADDR is an IPv4 address, [IPv6 address], '*' (all), or 'localhost'\n"
               "(the default: 127.0.0.1 and ::1). HOST_PORT 0 or empty (0:80, :80,\n"
               "127.0.0.1::80) or omitted (80, 80-82) lets the kernel pick each host port.\n\n"
               "Options:\n"
               "  -h --help                 Show this help\n"
               "     --version              Show the version\n"
               "     --system               Talk to portpubd on the system bus (default)\n"
               "     --user                 Talk to portpubd on the user's bus\n"
               "     --address=ADDRESS      Talk to portpubd on the bus at ADDRESS\n"
               "     --varlink[=PATH]       Talk to portpubd over varlink instead of D-Bus, on\n"
               "                            the socket PATH (default\n"
               "                            %s, with --user\n"
               "                            $XDG_RUNTIME_DIR/portpub/%s)\n"
               "     --no-legend            Print no column headers and no footer\n"
               "     --json[=pretty|short]  Print JSON (monitor: one object a line)\n"
               "     --no-ask-password      Do not let polkit ask for a password (over varlink\n"
               "                            it never may)\n"
               "Options of publish:\n"
               "     --guest=ADDRESS        The sandbox's guest address (IPv4, IPv6; repeatable;\n"
               "                            without it the daemon asks systemd-machined)\n"
               "     --max-sessions=N       Cap on concurrent sessions of each port\n"
               "     --idle-timeout=TIME    Close sessions idle this long: 30s, 5min, 1h30min,\n"
               "                            250ms; a bare number is seconds (TCP: 0 or\n"
               "                            infinity for never, the default)\n"
               "     --proxy-protocol=v1|v2 Send a PROXY protocol header to the guest (TCP)\n"
               "     --bind-to-caller       Keep the ports only while portpubctl runs: stay in\n"
               "                            the foreground until SIGINT or SIGTERM\n",
               VARLINK_SOCKET_DEFAULT, VARLINK_INTERFACE);
}

typedef struct Verb {
        const char *name;
        int min_args, max_args; /* counting the verb itself; -1: any number */
        int (*run)(int argc, char **argv);
} Verb;

static const Verb verbs[] = {
        { "list", 1, -1, verb_list },       { "sandboxes", 1, 1, verb_sandboxes },
        { "publish", 3, -1, verb_publish }, { "unpublish", 3, -1, verb_unpublish },
        { "remove", 2, -1, verb_remove },   { "set-guest", 3, -1, verb_set_guest },
        { "show", 1, 2, verb_show },        { "monitor", 1, 1, verb_monitor },
        { "status", 1, -1, verb_status },
};

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_SYSTEM,
                ARG_USER,
                ARG_ADDRESS,
                ARG_NO_LEGEND,
                ARG_NO_ASK_PASSWORD,
                ARG_GUEST,
                ARG_MAX_SESSIONS,
                ARG_IDLE_TIMEOUT,
                ARG_PROXY_PROTOCOL,
                ARG_BIND_TO_CALLER,
                ARG_VARLINK,
                ARG_JSON,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "system", no_argument, NULL, ARG_SYSTEM },
                { "user", no_argument, NULL, ARG_USER },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "no-legend", no_argument, NULL, ARG_NO_LEGEND },
                { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
                { "guest", required_argument, NULL, ARG_GUEST },
                { "max-sessions", required_argument, NULL, ARG_MAX_SESSIONS },
                { "idle-timeout", required_argument, NULL, ARG_IDLE_TIMEOUT },
                { "proxy-protocol", required_argument, NULL, ARG_PROXY_PROTOCOL },
                { "bind-to-caller", no_argument, NULL, ARG_BIND_TO_CALLER },
                { "varlink", optional_argument, NULL, ARG_VARLINK },
                { "json", optional_argument, NULL, ARG_JSON },
                {},
        };
        uint64_t v;
        int c;

        /* Messages of our own: getopt's name the program by its full path. */
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("portpubctl %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_SYSTEM:
                        arg_bus = BUS_SYSTEM;
                        break;
                case ARG_USER:
                        arg_bus = BUS_USER;
                        break;
                case ARG_ADDRESS:
                        arg_bus = BUS_ADDRESS;
                        arg_address = optarg;
                        break;
                case ARG_NO_LEGEND:
                        arg_legend = false;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;
                case ARG_GUEST:
                        if (arg_n_guests >= ELEMENTSOF(arg_guests))
                                return log_usage(
                                        "Invalid --guest='%s': a sandbox has at most one IPv4 and one IPv6 address.",
                                        optarg);
                        arg_guests[arg_n_guests++] = optarg;
                        break;
                case ARG_MAX_SESSIONS:
                        if (parse_number(optarg, strlen(optarg), UINT32_MAX, &v) < 0 || v == 0)
                                return log_usage(
                                        "Invalid --max-sessions='%s': expected a number, 1 or more.",
                                        optarg);
                        arg_max_sessions = (uint32_t) v;
                        arg_has_max_sessions = true;
                        break;
                case ARG_IDLE_TIMEOUT: {
                        char *error;
                        int r;

                        r = parse_duration("--idle-timeout", optarg, &arg_idle_timeout_usec, &error);
                        if (r < 0)
                                return log_parse_error(r, error);
                        arg_has_idle_timeout = true;
                        break;
                }
                case ARG_PROXY_PROTOCOL:
                        if (strcmp(optarg, "v1") != 0 && strcmp(optarg, "v2") != 0)
                                return log_usage("Invalid --proxy-protocol='%s': expected v1 or v2.",
                                                 optarg);
                        arg_proxy_protocol = optarg;
                        break;
                case ARG_BIND_TO_CALLER:
                        arg_bind_to_caller = true;
                        break;
                case ARG_VARLINK:
                        if (optarg && optarg[0] == 0)
                                return log_usage(
                                        "Invalid --varlink='': expected the path of a socket.");
                        if (optarg &&
                            strlen(optarg) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                                return log_usage(
                                        "Invalid --varlink='%s': the path is too long for a socket.",
                                        optarg);
                        arg_varlink = true;
                        arg_varlink_path = optarg;
                        break;
                case ARG_JSON:
                        if (!optarg || strcmp(optarg, "pretty") == 0)
                                arg_json = JSON_PRETTY;
                        else if (strcmp(optarg, "short") == 0)
                                arg_json = JSON_SHORT;
                        else
                                return log_usage("Invalid --json='%s': expected pretty or short.",
                                                 optarg);
                        break;
                case ':':
                        return log_usage("Option '%s' needs a value.", argv[optind - 1]);
                case '?':
                        if (optopt != 0)
                                return log_usage("Unknown option '-%c'.", optopt);
                        return log_usage("Unknown option '%s'.", argv[optind - 1]);
                default:
                        abort();
                }
        if (arg_varlink && arg_bus == BUS_ADDRESS)
                return log_usage(
                        "--address= names a D-Bus address; give the varlink socket as --varlink=PATH.");
        return 1;
}

static int run(int argc, char *argv[]) {
        const char *name;
        const Verb *verb = NULL;
        int r, n;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

        argc -= optind;
        argv += optind;
        name = argc > 0 ? argv[0] : "list";
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(verbs[i].name, name) == 0)
                        verb = &verbs[i];
        if (!verb)
                return log_usage("Unknown command '%s'; see 'portpubctl --help'.", name);

        n = argc > 0 ? argc : 1;
        if (n < verb->min_args)
                return log_usage("Too few arguments for '%s'; see 'portpubctl --help'.", name);
        if (verb->max_args >= 0 && n > verb->max_args)
                return log_usage("Too many arguments for '%s': '%s'; see 'portpubctl --help'.",
                                 name, argv[verb->max_args]);
        if (verb->run != verb_publish &&
            (arg_n_guests > 0 || arg_has_max_sessions || arg_has_idle_timeout ||
             arg_proxy_protocol || arg_bind_to_caller))
                return log_usage(
                        "--guest=, --max-sessions=, --idle-timeout=, --proxy-protocol= and --bind-to-caller are options of 'publish' only.");
        if (argc == 0) {
                static char *list_argv[] = { (char *) "list", NULL };

                return verb->run(1, list_argv);
        }
        return verb->run(argc, argv);
}

int main(int argc, char *argv[]) {
        int r;

        r = run(argc, argv);
        if ((fflush(stdout) != 0 || ferror(stdout)) && r >= 0)
                r = log_error_errno(EIO, "Failed to write to standard output.");
        if (usage_failed)
                return EXIT_USAGE;
        if (daemon_unreachable)
                return EXIT_NO_DAEMON;
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
