/* portpubctl: publish, list and watch the host ports of sandboxes through portpubd */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "macro.h"

#define MANAGER_INTERFACE "io.portpub.Publisher1.Manager"
#define SANDBOX_INTERFACE "io.portpub.Publisher1.Sandbox"
#define PORT_INTERFACE "io.portpub.Publisher1.Port"
#define PROPERTIES_INTERFACE "org.freedesktop.DBus.Properties"

/* The daemon takes at most this many tuples in one call; a bigger range would only fail there,
 * after the whole message was built and sent. */
#define TUPLES_PER_CALL_MAX 1024U

/* Exit status for a command line that is wrong before anything was asked of the daemon. */
#define EXIT_USAGE 2

typedef enum BusKind { BUS_SYSTEM, BUS_USER, BUS_ADDRESS } BusKind;

static BusKind arg_bus = BUS_SYSTEM;
static const char *arg_address;
static bool arg_legend = true;
static bool arg_ask_password = true;
static const char *arg_guests[2];
static size_t arg_n_guests;
static bool arg_has_max_sessions;
static uint32_t arg_max_sessions;
static bool arg_has_idle_timeout;
static uint64_t arg_idle_timeout_usec;
static const char *arg_proxy_protocol;
static bool arg_bind_to_caller;

/* Set when the command line is wrong: exit 2 rather than 1. */
static bool usage_failed;

/* Messages */

/* Prints "portpubctl: MESSAGE" to stderr and returns -|error| (or -EINVAL for 0); %m in format
 * expands to strerror(|error|). */
static int log_error_errno(int error, const char *format, ...) _printf_(2, 3);
static int log_error_errno(int error, const char *format, ...) {
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
#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

static int log_create_error(int r) {
        return log_error_errno(r, "Failed to create a bus message: %m");
}

static int log_parse_error(int r) {
        return log_error_errno(r, "Failed to parse a bus message: %m");
}

/* Reports a failed call: the daemon's own message where it sent one, which names the sandbox and
 * the port. */
static int log_call_error(const sd_bus_error *error, int r, const char *what) {
        if (sd_bus_error_is_set(error)) {
                log_error_errno(0, "%s", error->message ? error->message : error->name);
                return r < 0 ? r : -EIO;
        }
        return log_error_errno(r, "Failed to %s: %m", what);
}

/* Parsing the command line */

/* Parses a decimal number without sign or spaces, 0 to max. */
static int parse_number(const char *s, size_t len, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (len == 0)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                if (v > (max - (uint64_t) (s[i] - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (s[i] - '0');
        }
        *ret = v;
        return 0;
}

/* "N" or "N-M", N <= M, every port 0 to 65535; a range may not include 0. */
static int parse_port_range(const char *s, size_t len, uint16_t *ret_first, uint16_t *ret_last) {
        const char *dash = memchr(s, '-', len);
        uint64_t first, last;

        if (!dash) {
                if (parse_number(s, len, UINT16_MAX, &first) < 0)
                        return -EINVAL;
                last = first;
        } else if (parse_number(s, (size_t) (dash - s), UINT16_MAX, &first) < 0 ||
                   parse_number(dash + 1, len - (size_t) (dash - s) - 1, UINT16_MAX, &last) < 0 ||
                   first == 0 || first > last)
                return -EINVAL;
        *ret_first = (uint16_t) first;
        *ret_last = (uint16_t) last;
        return 0;
}

/* One SPEC of the command line: a run of consecutive host ports to a run of guest ports. */
typedef struct PortRange {
        const char *protocol;
        char host_address[INET6_ADDRSTRLEN];
        uint16_t host_first, host_last;
        uint16_t guest_first, guest_last; /* 0 for specs without a guest port */
} PortRange;

static unsigned port_range_size(const PortRange *p) {
        return (unsigned) (p->host_last - p->host_first) + 1;
}

/* Parses "[HOST_ADDR:]HOST_PORT:GUEST_PORT[/PROTO]" (with_guest) or "[HOST_ADDR:]HOST_PORT[/PROTO]",
 * ports or equal-length ranges "N-M". HOST_ADDR is a literal IPv4 address, "[IPv6]", "*", or
 * "localhost" (the daemon's "": loopback of both families), which is also what an omitted one
 * means. Reports what is wrong, quoting spec. */
static int parse_spec(const char *spec, bool with_guest, PortRange *ret) {
        _cleanup_free_ char *s = strdup(spec);
        const char *ports, *guest, *want;
        PortRange p = { .protocol = "tcp" };
        char *slash, *colon;
        size_t n_colons = 0;

        if (!s)
                return log_oom();
        want = with_guest ? "[HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]"
                          : "[HOST_ADDR:]HOST_PORT[/tcp|/udp]";

        slash = strrchr(s, '/');
        if (slash) {
                *slash = 0;
                if (strcmp(slash + 1, "tcp") == 0)
                        p.protocol = "tcp";
                else if (strcmp(slash + 1, "udp") == 0)
                        p.protocol = "udp";
                else
                        return log_usage("Invalid port spec '%s': protocol '%s', expected tcp or udp.",
                                         spec, slash + 1);
        }

        if (s[0] == '[') {
                char *close = strchr(s, ']');
                struct in6_addr a6;

                if (!close || close[1] != ':')
                        return log_usage(
                                "Invalid port spec '%s': expected '[IPV6]:' before the port, as in %s.",
                                spec, want);
                *close = 0;
                if (inet_pton(AF_INET6, s + 1, &a6) != 1)
                        return log_usage("Invalid port spec '%s': '%s' is not an IPv6 address.",
                                         spec, s + 1);
                snprintf(p.host_address, sizeof p.host_address, "%s", s + 1);
                ports = close + 2;
        } else {
                for (const char *c = s; *c; c++)
                        n_colons += *c == ':';
                if (n_colons == (with_guest ? 2U : 1U)) {
                        struct in_addr a4;

                        colon = strchr(s, ':');
                        *colon = 0;
                        if (strcmp(s, "localhost") == 0)
                                p.host_address[0] = 0;
                        else if (strcmp(s, "*") == 0 || inet_pton(AF_INET, s, &a4) == 1)
                                snprintf(p.host_address, sizeof p.host_address, "%s", s);
                        else
                                return log_usage(
                                        "Invalid port spec '%s': host address '%s', expected an IPv4 address, [IPV6], '*' or 'localhost'.",
                                        spec, s);
                        ports = colon + 1;
                } else if (n_colons == (with_guest ? 1U : 0U))
                        ports = s;
                else
                        return log_usage(
                                "Invalid port spec '%s': expected %s (IPv6 addresses in brackets).",
                                spec, want);
        }

        guest = with_guest ? strchr(ports, ':') : NULL;
        if (parse_port_range(ports, guest ? (size_t) (guest - ports) : strlen(ports), &p.host_first,
                             &p.host_last) < 0)
                return log_usage("Invalid port spec '%s': expected %s, ports 0 to 65535 or ranges N-M.",
                                 spec, want);
        if (guest) {
                if (parse_port_range(guest + 1, strlen(guest + 1), &p.guest_first, &p.guest_last) < 0 ||
                    p.guest_first == 0)
                        return log_usage(
                                "Invalid port spec '%s': guest port, expected 1 to 65535 or a range N-M.",
                                spec);
                if (p.guest_last - p.guest_first != p.host_last - p.host_first)
                        return log_usage(
                                "Invalid port spec '%s': the host and guest ranges differ in length.",
                                spec);
        } else if (p.host_first == 0)
                return log_usage("Invalid port spec '%s': host port 0, expected 1 to 65535.", spec);

        *ret = p;
        return 0;
}

/* Parses every spec; the number of tuples they expand to stays within one call. */
static int parse_specs(char **specs, size_t n, bool with_guest, PortRange **ret) {
        _cleanup_free_ PortRange *ranges = NULL;
        size_t total = 0;
        int r;

        ranges = calloc(n ? n : 1, sizeof *ranges);
        if (!ranges)
                return log_oom();
        for (size_t i = 0; i < n; i++) {
                r = parse_spec(specs[i], with_guest, &ranges[i]);
                if (r < 0)
                        return r;
                total += port_range_size(&ranges[i]);
                if (total > TUPLES_PER_CALL_MAX)
                        return log_usage("Too many ports: more than %u in one call (at '%s').",
                                         TUPLES_PER_CALL_MAX, specs[i]);
        }
        *ret = TAKE_PTR(ranges);
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

/* The bus */

static int bus_connect(sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        switch (arg_bus) {
        case BUS_SYSTEM:
                r = sd_bus_open_system(&bus);
                if (r < 0)
                        return log_error_errno(r, "Failed to connect to the system bus: %m");
                break;
        case BUS_USER:
                r = sd_bus_open_user(&bus);
                if (r < 0)
                        return log_error_errno(r, "Failed to connect to the user's bus: %m");
                break;
        case BUS_ADDRESS:
                r = sd_bus_new(&bus);
                if (r < 0)
                        return log_error_errno(r, "Failed to allocate a bus: %m");
                r = sd_bus_set_address(bus, arg_address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, 1);
                if (r >= 0)
                        r = sd_bus_start(bus);
                if (r < 0)
                        return log_error_errno(r, "Failed to connect to the bus at '%s': %m",
                                               arg_address);
                break;
        default:
                abort();
        }
        r = sd_bus_set_allow_interactive_authorization(bus, arg_ask_password);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the bus: %m");
        *ret = TAKE_PTR(bus);
        return 0;
}

static int call_manager(sd_bus *bus, const char *method, sd_bus_message **reply, const char *types,
                        ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        va_list ap;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE,
                                           method);
        if (r < 0)
                return log_create_error(r);
        va_start(ap, types);
        r = sd_bus_message_appendv(m, types, ap);
        va_end(ap);
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_call(bus, m, 0, &error, reply);
        if (r < 0)
                return log_call_error(&error, r, "call the daemon");
        return 0;
}

static int get_all(sd_bus *bus, const char *path, const char *interface, sd_bus_message **reply,
                   sd_bus_error *error) {
        return sd_bus_call_method(bus, BUS_NAME, path, PROPERTIES_INTERFACE, "GetAll", error, reply,
                                  "s", interface);
}

/* Blocks SIGINT and SIGTERM and returns a signalfd for them, so that a signal ends a wait loop
 * cleanly whenever it comes, also before the loop started. */
static int signals_block(void) {
        sigset_t mask;
        int fd;

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

/* Serves the bus until SIGINT or SIGTERM arrives on signal_fd. */
static int bus_run_until_signal(sd_bus *bus, int signal_fd) {
        int r;

        for (;;) {
                struct pollfd p[2] = {
                        { .fd = signal_fd, .events = POLLIN },
                        { .fd = -1 },
                };
                struct signalfd_siginfo si;
                uint64_t until;
                int timeout_ms = -1;

                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return log_error_errno(r, "Lost the bus connection: %m");
                if (r > 0)
                        continue;

                p[1].fd = sd_bus_get_fd(bus);
                if (p[1].fd < 0)
                        return log_error_errno(p[1].fd, "Lost the bus connection: %m");
                r = sd_bus_get_events(bus);
                if (r < 0)
                        return log_error_errno(r, "Lost the bus connection: %m");
                p[1].events = (short) r;
                r = sd_bus_get_timeout(bus, &until);
                if (r < 0)
                        return log_error_errno(r, "Lost the bus connection: %m");
                if (until != UINT64_MAX) {
                        struct timespec ts;
                        uint64_t now;

                        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
                        now = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
                        /* Round up: waking before the deadline would only spin. */
                        timeout_ms = until <= now ? 0
                                                  : (int) MIN((until - now + USEC_PER_MSEC - 1) /
                                                                      USEC_PER_MSEC,
                                                              (uint64_t) INT32_MAX);
                }

                if (poll(p, ELEMENTSOF(p), timeout_ms) < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(errno, "Failed to wait for the bus: %m");
                }
                if (p[0].revents & POLLIN) {
                        if (read(signal_fd, &si, sizeof si) == (ssize_t) sizeof si)
                                return 0;
                }
        }
}

/* Verbs */

typedef struct PortEntry {
        const char *sandbox, *protocol, *host_address, *guest_address, *state, *path;
        uint16_t host_port, guest_port;
} PortEntry;

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

static bool sandbox_selected(const char *id, char **filter, size_t n_filter) {
        if (n_filter == 0)
                return true;
        for (size_t i = 0; i < n_filter; i++)
                if (strcmp(filter[i], id) == 0)
                        return true;
        return false;
}

/* The counters of one port; false when the port went away since it was listed. */
typedef struct PortCounters {
        uint32_t active;
        uint64_t total, bytes_to_guest, bytes_from_guest;
} PortCounters;

static int get_port_counters(sd_bus *bus, const char *path, PortCounters *ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        PortCounters c = {};
        const char *name;
        int r;

        r = get_all(bus, path, PORT_INTERFACE, &reply, &error);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT) ||
                    sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_INTERFACE))
                        return 0;
                return log_call_error(&error, r, "get the port's properties");
        }
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return log_parse_error(r);
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                r = sd_bus_message_read(reply, "s", &name);
                if (r < 0)
                        return log_parse_error(r);
                if (strcmp(name, "ActiveSessions") == 0)
                        r = sd_bus_message_read(reply, "v", "u", &c.active);
                else if (strcmp(name, "TotalSessions") == 0)
                        r = sd_bus_message_read(reply, "v", "t", &c.total);
                else if (strcmp(name, "BytesToGuest") == 0)
                        r = sd_bus_message_read(reply, "v", "t", &c.bytes_to_guest);
                else if (strcmp(name, "BytesFromGuest") == 0)
                        r = sd_bus_message_read(reply, "v", "t", &c.bytes_from_guest);
                else
                        r = sd_bus_message_skip(reply, "v");
                if (r < 0)
                        return log_parse_error(r);
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return log_parse_error(r);
        }
        if (r < 0)
                return log_parse_error(r);
        *ret = c;
        return 1;
}

static int verb_list(int argc, char **argv) {
        static const char *const header[] = { "SANDBOX", "PROTO", "LISTEN",   "GUEST",    "STATE",
                                              "ACTIVE",  "TOTAL", "BYTES-IN", "BYTES-OUT" };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(table_done) Table t = {
                .header = header, .n_columns = ELEMENTSOF(header), .right_aligned = 0x1e0, /* the counters */
        };
        _cleanup_free_ PortEntry *entries = NULL;
        size_t n = 0, allocated = 0;
        int r;

        r = bus_connect(&bus);
        if (r < 0)
                return r;
        r = call_manager(bus, "ListPorts", &reply, "");
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "(sssqsqso)");
        if (r < 0)
                return log_parse_error(r);
        for (;;) {
                PortEntry e;

                r = sd_bus_message_read(reply, "(sssqsqso)", &e.sandbox, &e.protocol,
                                        &e.host_address, &e.host_port, &e.guest_address,
                                        &e.guest_port, &e.state, &e.path);
                if (r < 0)
                        return log_parse_error(r);
                if (r == 0)
                        break;
                if (!sandbox_selected(e.sandbox, argv + 1, (size_t) argc - 1))
                        continue;
                if (n >= allocated) {
                        size_t na = allocated ? allocated * 2 : 64;
                        PortEntry *ne = reallocarray(entries, na, sizeof *ne);

                        if (!ne)
                                return log_oom();
                        entries = ne;
                        allocated = na;
                }
                entries[n++] = e;
        }
        if (n > 0)
                qsort(entries, n, sizeof *entries, port_entry_compare);

        for (size_t i = 0; i < n; i++) {
                const PortEntry *e = &entries[i];
                char listen[HOST_PORT_MAX], guest[HOST_PORT_MAX];
                char active[DECIMAL_MAX], total[DECIMAL_MAX], bytes_in[DECIMAL_MAX],
                        bytes_out[DECIMAL_MAX];
                PortCounters c = {};

                r = get_port_counters(bus, e->path, &c);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue; /* unpublished since it was listed */
                if (e->guest_address[0] == 0)
                        snprintf(guest, sizeof guest, "-:%u", e->guest_port);
                else
                        format_host_port(e->guest_address, e->guest_port, guest, sizeof guest);
                snprintf(active, sizeof active, "%" PRIu32, c.active);
                snprintf(total, sizeof total, "%" PRIu64, c.total);
                snprintf(bytes_in, sizeof bytes_in, "%" PRIu64, c.bytes_to_guest);
                snprintf(bytes_out, sizeof bytes_out, "%" PRIu64, c.bytes_from_guest);
                r = table_add_row(&t, e->sandbox, e->protocol,
                                  format_host_port(e->host_address, e->host_port, listen,
                                                   sizeof listen),
                                  guest, e->state, active, total, bytes_in, bytes_out);
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

typedef struct SandboxEntry {
        const char *id, *path;
        uint32_t n_ports;
} SandboxEntry;

static int sandbox_entry_compare(const void *a, const void *b) {
        return strcmp(((const SandboxEntry *) a)->id, ((const SandboxEntry *) b)->id);
}

static void strv_freep(char ***p) {
        if (!*p)
                return;
        for (char **s = *p; *s; s++)
                free(*s);
        free(*p);
}

/* "10.0.0.2,fd00::2", or "-"; 0 when the sandbox went away since it was listed. */
static int get_guest_addresses(sd_bus *bus, const char *path, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(strv_freep) char **l = NULL;
        size_t len = 2;
        char *s;
        int r;

        r = sd_bus_get_property_strv(bus, BUS_NAME, path, SANDBOX_INTERFACE, "GuestAddresses",
                                     &error, &l);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT) ||
                    sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_INTERFACE))
                        return 0;
                return log_call_error(&error, r, "get the sandbox's guest addresses");
        }
        for (char **a = l; a && *a; a++)
                len += strlen(*a) + 1;
        s = calloc(len, 1);
        if (!s)
                return log_oom();
        for (char **a = l; a && *a; a++) {
                if (a != l)
                        strcat(s, ",");
                strcat(s, *a);
        }
        if (s[0] == 0)
                strcpy(s, "-");
        *ret = s;
        return 1;
}

static int verb_sandboxes(int argc, char **argv) {
        static const char *const header[] = { "SANDBOX", "PORTS", "GUEST-ADDRESSES" };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(table_done) Table t = {
                .header = header,
                .n_columns = ELEMENTSOF(header),
                .right_aligned = 0x2,
        };
        _cleanup_free_ SandboxEntry *entries = NULL;
        size_t n = 0, allocated = 0;
        int r;

        r = bus_connect(&bus);
        if (r < 0)
                return r;
        r = call_manager(bus, "ListSandboxes", &reply, "");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "(sou)");
        if (r < 0)
                return log_parse_error(r);
        for (;;) {
                SandboxEntry e;

                r = sd_bus_message_read(reply, "(sou)", &e.id, &e.path, &e.n_ports);
                if (r < 0)
                        return log_parse_error(r);
                if (r == 0)
                        break;
                if (n >= allocated) {
                        size_t na = allocated ? allocated * 2 : 16;
                        SandboxEntry *ne = reallocarray(entries, na, sizeof *ne);

                        if (!ne)
                                return log_oom();
                        entries = ne;
                        allocated = na;
                }
                entries[n++] = e;
        }
        if (n > 0)
                qsort(entries, n, sizeof *entries, sandbox_entry_compare);

        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *guests = NULL;
                char n_ports[DECIMAL_MAX];

                r = get_guest_addresses(bus, entries[i].path, &guests);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                snprintf(n_ports, sizeof n_ports, "%" PRIu32, entries[i].n_ports);
                r = table_add_row(&t, entries[i].id, n_ports, guests);
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

static int append_options(sd_bus_message *m) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        if (arg_has_max_sessions) {
                r = sd_bus_message_append(m, "{sv}", "MaxSessions", "u", arg_max_sessions);
                if (r < 0)
                        return r;
        }
        if (arg_has_idle_timeout) {
                r = sd_bus_message_append(m, "{sv}", "IdleTimeoutUSec", "t", arg_idle_timeout_usec);
                if (r < 0)
                        return r;
        }
        if (arg_proxy_protocol) {
                r = sd_bus_message_append(m, "{sv}", "ProxyProtocol", "s", arg_proxy_protocol);
                if (r < 0)
                        return r;
        }
        if (arg_bind_to_caller) {
                r = sd_bus_message_append(m, "{sv}", "BindToCaller", "b", 1);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

/* Appends the tuples of every range: (ssqq) with guest ports, else (ssq). Host port 0 stays 0,
 * for the kernel to pick. */
static int append_tuples(sd_bus_message *m, const PortRange *ranges, size_t n, bool with_guest) {
        int r;

        r = sd_bus_message_open_container(m, 'a', with_guest ? "(ssqq)" : "(ssq)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                for (unsigned k = 0; k < port_range_size(&ranges[i]); k++) {
                        uint16_t host = ranges[i].host_first == 0
                                                ? 0
                                                : (uint16_t) (ranges[i].host_first + k);

                        if (with_guest)
                                r = sd_bus_message_append(m, "(ssqq)", ranges[i].protocol,
                                                          ranges[i].host_address, host,
                                                          (uint16_t) (ranges[i].guest_first + k));
                        else
                                r = sd_bus_message_append(m, "(ssq)", ranges[i].protocol,
                                                          ranges[i].host_address, host);
                        if (r < 0)
                                return r;
                }
        return sd_bus_message_close_container(m);
}

static int verb_publish(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_close_ int signal_fd = -EBADF;
        _cleanup_free_ PortRange *ranges = NULL;
        const char *sandbox_path, *protocol, *address, *path;
        uint16_t host_port, guest_port;
        int r;

        r = parse_specs(argv + 2, (size_t) argc - 2, true, &ranges);
        if (r < 0)
                return r;
        if (arg_bind_to_caller) {
                /* The ports live as long as this process: end it cleanly on a signal. */
                signal_fd = signals_block();
                if (signal_fd < 0)
                        return signal_fd;
        }

        r = bus_connect(&bus);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE,
                                           "PublishPorts");
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_message_append(m, "s", argv[1]);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "s");
        for (size_t i = 0; r >= 0 && i < arg_n_guests; i++)
                r = sd_bus_message_append(m, "s", arg_guests[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = append_tuples(m, ranges, (size_t) argc - 2, true);
        if (r >= 0)
                r = append_options(m);
        if (r < 0)
                return log_create_error(r);

        r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0)
                return log_call_error(&error, r, "publish");

        r = sd_bus_message_read(reply, "o", &sandbox_path);
        if (r < 0)
                return log_parse_error(r);
        r = sd_bus_message_enter_container(reply, 'a', "(ssqqo)");
        if (r < 0)
                return log_parse_error(r);
        while ((r = sd_bus_message_read(reply, "(ssqqo)", &protocol, &address, &host_port,
                                        &guest_port, &path)) > 0) {
                char listen[HOST_PORT_MAX];

                printf("%s %s -> %u (%s)\n", protocol,
                       format_host_port(address, host_port, listen, sizeof listen), guest_port, path);
        }
        if (r < 0)
                return log_parse_error(r);

        if (!arg_bind_to_caller)
                return 0;
        if (fflush(stdout) != 0)
                return log_error_errno(errno, "Failed to write to standard output: %m");
        if (isatty(STDERR_FILENO))
                fprintf(stderr, "Published while portpubctl runs; press Ctrl-C to unpublish.\n");
        return bus_run_until_signal(bus, signal_fd);
}

static int verb_unpublish(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ PortRange *ranges = NULL;
        int r;

        r = parse_specs(argv + 2, (size_t) argc - 2, false, &ranges);
        if (r < 0)
                return r;
        r = bus_connect(&bus);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE,
                                           "UnpublishPorts");
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_message_append(m, "s", argv[1]);
        if (r >= 0)
                r = append_tuples(m, ranges, (size_t) argc - 2, false);
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_call(bus, m, 0, &error, NULL);
        if (r < 0)
                return log_call_error(&error, r, "unpublish");
        return 0;
}

static int verb_remove(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = bus_connect(&bus);
        if (r < 0)
                return r;
        for (int i = 1; i < argc; i++) {
                r = call_manager(bus, "RemoveSandbox", NULL, "s", argv[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int verb_set_guest(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = bus_connect(&bus);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE,
                                           "SetGuestAddresses");
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_message_append(m, "s", argv[1]);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, argv + 2);
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_call(bus, m, 0, &error, NULL);
        if (r < 0)
                return log_call_error(&error, r, "set the guest addresses");
        return 0;
}

static bool type_is_basic(char type) {
        return type != 0 && strchr("ybnqiuxtdsog", type);
}

/* A value print_value() can print whole: a basic type or an array of one. */
static bool type_is_printable(char type, const char *contents) {
        return type_is_basic(type) || (type == SD_BUS_TYPE_ARRAY && contents &&
                                       strlen(contents) == 1 && type_is_basic(contents[0]));
}

/* Prints one value the way systemctl show does: arrays space-separated, booleans as yes/no. */
static int print_value(sd_bus_message *m, char type, const char *contents) {
        union {
                uint8_t y;
                int b;
                int16_t n;
                uint16_t q;
                int32_t i;
                uint32_t u;
                int64_t x;
                uint64_t t;
                double d;
                const char *s;
        } v;
        int r;

        if (type == SD_BUS_TYPE_ARRAY) {
                bool first = true;

                r = sd_bus_message_enter_container(m, 'a', contents);
                if (r < 0)
                        return r;
                while ((r = sd_bus_message_peek_type(m, NULL, NULL)) > 0) {
                        if (!first)
                                fputc(' ', stdout);
                        first = false;
                        r = print_value(m, contents[0], NULL);
                        if (r < 0)
                                return r;
                }
                if (r < 0)
                        return r;
                return sd_bus_message_exit_container(m);
        }
        r = sd_bus_message_read_basic(m, type, &v);
        if (r < 0)
                return r;
        switch (type) {
        case 'y':
                printf("%u", v.y);
                break;
        case 'b':
                fputs(v.b ? "yes" : "no", stdout);
                break;
        case 'n':
                printf("%d", v.n);
                break;
        case 'q':
                printf("%u", v.q);
                break;
        case 'i':
                printf("%" PRIi32, v.i);
                break;
        case 'u':
                printf("%" PRIu32, v.u);
                break;
        case 'x':
                printf("%" PRIi64, v.x);
                break;
        case 't':
                printf("%" PRIu64, v.t);
                break;
        case 'd':
                printf("%g", v.d);
                break;
        default:
                fputs(v.s, stdout);
                break;
        }
        return 0;
}

static int print_properties(sd_bus_message *reply) {
        const char *name, *contents;
        char type;
        int r;

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return log_parse_error(r);
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                r = sd_bus_message_read(reply, "s", &name);
                if (r < 0)
                        return log_parse_error(r);
                r = sd_bus_message_peek_type(reply, NULL, &contents);
                if (r < 0)
                        return log_parse_error(r);
                r = sd_bus_message_enter_container(reply, 'v', contents);
                if (r < 0)
                        return log_parse_error(r);
                r = sd_bus_message_peek_type(reply, &type, &contents);
                if (r < 0)
                        return log_parse_error(r);
                /* Only values printed whole get a line; a struct or dict would be a half truth. */
                if (type_is_printable(type, contents)) {
                        printf("%s=", name);
                        r = print_value(reply, type, contents);
                        fputc('\n', stdout);
                } else
                        r = sd_bus_message_skip(reply, NULL);
                if (r < 0)
                        return log_parse_error(r);
                r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return log_parse_error(r);
        }
        if (r < 0)
                return log_parse_error(r);
        return 0;
}

static int verb_show(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *props = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        const char *path = MANAGER_PATH, *interface = MANAGER_INTERFACE;
        PortRange p;
        int r;

        if (argc > 1) {
                r = parse_spec(argv[1], false, &p);
                if (r < 0)
                        return r;
                if (p.host_first != p.host_last)
                        return log_usage("Invalid port '%s': show takes one port, not a range.",
                                         argv[1]);
        }
        r = bus_connect(&bus);
        if (r < 0)
                return r;
        if (argc > 1) {
                r = call_manager(bus, "GetPort", &reply, "ssq", p.protocol, p.host_address,
                                 p.host_first);
                if (r < 0)
                        return r;
                r = sd_bus_message_read(reply, "o", &path);
                if (r < 0)
                        return log_parse_error(r);
                interface = PORT_INTERFACE;
        }
        r = get_all(bus, path, interface, &props, &error);
        if (r < 0)
                return log_call_error(&error, r, "get the properties");
        return print_properties(props);
}

static int on_manager_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const char *member = sd_bus_message_get_member(m);
        const char *sandbox, *protocol, *address, *path, *reason;
        char listen[HOST_PORT_MAX];
        uint16_t port;
        int r;

        if (!member)
                return 0;
        if (strcmp(member, "PortPublished") == 0) {
                r = sd_bus_message_read(m, "sssqo", &sandbox, &protocol, &address, &port, &path);
                if (r >= 0)
                        printf("PortPublished %s %s %s %s\n", sandbox, protocol,
                               format_host_port(address, port, listen, sizeof listen), path);
        } else if (strcmp(member, "PortUnpublished") == 0) {
                r = sd_bus_message_read(m, "sssqos", &sandbox, &protocol, &address, &port, &path,
                                        &reason);
                if (r >= 0)
                        printf("PortUnpublished %s %s %s %s reason=%s\n", sandbox, protocol,
                               format_host_port(address, port, listen, sizeof listen), path, reason);
        } else if (strcmp(member, "SandboxNew") == 0 || strcmp(member, "SandboxRemoved") == 0) {
                r = sd_bus_message_read(m, "so", &sandbox, &path);
                if (r >= 0)
                        printf("%s %s %s\n", member, sandbox, path);
        } else
                return 0;
        if (r < 0)
                log_error_errno(r, "Failed to parse signal %s, ignoring: %m", member);
        /* Someone may be reading this line by line through a pipe. */
        fflush(stdout);
        return 0;
}

static int verb_monitor(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_close_ int signal_fd = -EBADF;
        int r;

        signal_fd = signals_block();
        if (signal_fd < 0)
                return signal_fd;
        r = bus_connect(&bus);
        if (r < 0)
                return r;
        /* Synchronous: once it returns, the bus delivers every signal sent from here on. */
        r = sd_bus_match_signal(bus, NULL, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, NULL,
                                on_manager_signal, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to subscribe to the daemon's signals: %m");
        if (arg_legend) {
                printf("Monitoring %s; press Ctrl-C to stop.\n", BUS_NAME);
                fflush(stdout);
        }
        return bus_run_until_signal(bus, signal_fd);
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
               "  show [PORT]                    Show a port's properties (or the daemon's)\n"
               "  monitor                        Print publications as they happen\n\n"
               "SPEC is [HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp], PORT is\n"
               "[HOST_ADDR:]HOST_PORT[/tcp|/udp]; ports may be ranges N-M. HOST_ADDR is an IPv4\n"
               "address, [IPv6 address], '*' (all), or 'localhost' (the default: 127.0.0.1 and\n"
               "::1). HOST_PORT 0 lets the kernel pick.\n\n"
               "Options:\n"
               "  -h --help                 Show this help\n"
               "     --version              Show the version\n"
               "     --system               Talk to portpubd on the system bus (default)\n"
               "     --user                 Talk to portpubd on the user's bus\n"
               "     --address=ADDRESS      Talk to portpubd on the bus at ADDRESS\n"
               "     --no-legend            Print no column headers and no footer\n"
               "     --no-ask-password      Do not let polkit ask for a password\n"
               "Options of publish:\n"
               "     --guest=ADDRESS        The sandbox's guest address (IPv4, IPv6; repeatable;\n"
               "                            without it the daemon asks systemd-machined)\n"
               "     --max-sessions=N       Cap on concurrent sessions of each port\n"
               "     --idle-timeout=SECONDS Close sessions idle this long (0: never, TCP)\n"
               "     --proxy-protocol=v1|v2 Send a PROXY protocol header to the guest (TCP)\n"
               "     --bind-to-caller       Keep the ports only while portpubctl runs: stay in\n"
               "                            the foreground until SIGINT or SIGTERM\n");
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
                case ARG_IDLE_TIMEOUT:
                        if (parse_number(optarg, strlen(optarg), UINT64_MAX / USEC_PER_SEC, &v) < 0)
                                return log_usage(
                                        "Invalid --idle-timeout='%s': expected seconds, 0 or more.",
                                        optarg);
                        arg_idle_timeout_usec = v * USEC_PER_SEC;
                        arg_has_idle_timeout = true;
                        break;
                case ARG_PROXY_PROTOCOL:
                        if (strcmp(optarg, "v1") != 0 && strcmp(optarg, "v2") != 0)
                                return log_usage("Invalid --proxy-protocol='%s': expected v1 or v2.",
                                                 optarg);
                        arg_proxy_protocol = optarg;
                        break;
                case ARG_BIND_TO_CALLER:
                        arg_bind_to_caller = true;
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
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
