/* portpubctl over D-Bus: io.portpub.Publisher1's Manager, Sandbox and Port objects */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "time-util.h"

#define MANAGER_INTERFACE "io.portpub.Publisher1.Manager"
#define SANDBOX_INTERFACE "io.portpub.Publisher1.Sandbox"
#define PORT_INTERFACE "io.portpub.Publisher1.Port"
#define PROPERTIES_INTERFACE "org.freedesktop.DBus.Properties"

typedef struct DBusDaemon {
        Daemon daemon;
        sd_bus *bus;
} DBusDaemon;

static sd_bus *bus_of(Daemon *d) {
        return container_of(d, DBusDaemon, daemon)->bus;
}

static int log_create_error(int r) {
        return log_error_errno(r, "Failed to create a bus message: %m");
}

static int log_parse_error(int r) {
        return log_error_errno(r, "Failed to parse a bus message: %m");
}

/* r, reported as log_parse_error() does when it failed. */
static int parsed(int r) {
        return r < 0 ? log_parse_error(r) : r;
}

/* Reports a failed call: the daemon's own message where it sent one, which names the sandbox and
 * the port; a daemon that is not on the bus in plain words. */
static int log_call_error(const sd_bus_error *error, int r, const char *what) {
        if (sd_bus_error_has_name(error, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
            sd_bus_error_has_name(error, SD_BUS_ERROR_NAME_HAS_NO_OWNER)) {
                daemon_unreachable = true;
                return log_error_errno(r,
                                       "Cannot %s: portpubd is not running (nobody owns %s on the bus).",
                                       what, BUS_NAME);
        }
        if (sd_bus_error_has_name(error, SD_BUS_ERROR_NO_REPLY) ||
            sd_bus_error_has_name(error, SD_BUS_ERROR_TIMEOUT))
                return log_error_errno(r, "Cannot %s: portpubd did not answer in time.", what);
        if (sd_bus_error_is_set(error)) {
                log_error_errno(0, "%s", error->message ? error->message : error->name);
                return r < 0 ? r : -EIO;
        }
        return log_error_errno(r, "Cannot %s: %m", what);
}

/* what: what is done, for messages ("list the ports"). */
static int call_manager(sd_bus *bus, const char *what, const char *method, sd_bus_message **reply,
                        const char *types, ...) {
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
                return log_call_error(&error, r, what);
        return 0;
}

static int get_all(sd_bus *bus, const char *path, const char *interface, sd_bus_message **reply,
                   sd_bus_error *error) {
        return sd_bus_call_method(bus, BUS_NAME, path, PROPERTIES_INTERFACE, "GetAll", error, reply,
                                  "s", interface);
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
                int timeout_ms;

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
                timeout_ms = poll_timeout_ms(until);

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

/* list */

static bool error_is_gone(const sd_bus_error *error) {
        return sd_bus_error_has_name(error, SD_BUS_ERROR_UNKNOWN_OBJECT) ||
               sd_bus_error_has_name(error, SD_BUS_ERROR_UNKNOWN_INTERFACE);
}

/* Reads one property of a GetAll reply, the message at its variant, which it reads or skips; < 0
 * reported. */
typedef int (*property_read_t)(sd_bus_message *reply, const char *name, void *userdata);

/* GetAll of path's interface, each property handed to read. *reply keeps the message, for strings
 * read borrows from it. 1, or 0 when the object went away since it was listed (if gone_ok). */
static int read_properties(sd_bus *bus, const char *path, const char *interface, const char *what,
                           bool gone_ok, property_read_t read, void *userdata,
                           sd_bus_message **reply) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        const char *name;
        int r;

        r = get_all(bus, path, interface, reply, &error);
        if (r < 0) {
                if (gone_ok && error_is_gone(&error))
                        return 0;
                return log_call_error(&error, r, what);
        }
        r = sd_bus_message_enter_container(*reply, 'a', "{sv}");
        if (r < 0)
                return log_parse_error(r);
        while ((r = sd_bus_message_enter_container(*reply, 'e', "sv")) > 0) {
                r = sd_bus_message_read(*reply, "s", &name);
                if (r < 0)
                        return log_parse_error(r);
                r = read(*reply, name, userdata);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(*reply);
                if (r < 0)
                        return log_parse_error(r);
        }
        if (r < 0)
                return log_parse_error(r);
        return 1;
}

static void strv_freep(char ***p) {
        if (!*p)
                return;
        for (char **s = *p; *s; s++)
                free(*s);
        free(*p);
}

static size_t strv_length(char **l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

/* One field of GetAll's reply to the Port interface, into e; unknown ones are skipped. The
 * strings point into the message. */
typedef struct PortRead {
        PortEntry e;
        char **listen;
} PortRead;

static int read_port_property(sd_bus_message *reply, const char *name, void *userdata) {
        PortRead *p = userdata;
        PortEntry *e = &p->e;
        static const struct {
                const char *name;
                size_t offset;
        } strings[] = {
                { "Sandbox", offsetof(PortEntry, sandbox) },
                { "Protocol", offsetof(PortEntry, protocol) },
                { "HostAddress", offsetof(PortEntry, host_address) },
                { "GuestAddress", offsetof(PortEntry, guest_address) },
                { "State", offsetof(PortEntry, state) },
                { "LastError", offsetof(PortEntry, last_error) },
                { "ProxyProtocol", offsetof(PortEntry, proxy_protocol) },
        }, u64s[] = {
                { "TotalSessions", offsetof(PortEntry, total_sessions) },
                { "RejectedSessions", offsetof(PortEntry, rejected_sessions) },
                { "FailedSessions", offsetof(PortEntry, failed_sessions) },
                { "BytesToGuest", offsetof(PortEntry, bytes_to_guest) },
                { "BytesFromGuest", offsetof(PortEntry, bytes_from_guest) },
                { "IdleTimeoutUSec", offsetof(PortEntry, idle_timeout_usec) },
        };
        int r;

        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                if (strcmp(name, strings[i].name) == 0)
                        return parsed(sd_bus_message_read(
                                reply, "v", "s", (const char **) ((char *) e + strings[i].offset)));
        for (size_t i = 0; i < ELEMENTSOF(u64s); i++)
                if (strcmp(name, u64s[i].name) == 0)
                        return parsed(sd_bus_message_read(reply, "v", "t",
                                                          (uint64_t *) ((char *) e + u64s[i].offset)));
        if (strcmp(name, "HostPort") == 0)
                return parsed(sd_bus_message_read(reply, "v", "q", &e->host_port));
        if (strcmp(name, "GuestPort") == 0)
                return parsed(sd_bus_message_read(reply, "v", "q", &e->guest_port));
        if (strcmp(name, "ActiveSessions") == 0)
                return parsed(sd_bus_message_read(reply, "v", "u", &e->active_sessions));
        if (strcmp(name, "MaxSessions") == 0)
                return parsed(sd_bus_message_read(reply, "v", "u", &e->max_sessions));
        if (strcmp(name, "ListenAddresses") == 0) {
                r = sd_bus_message_enter_container(reply, 'v', "as");
                if (r < 0)
                        return log_parse_error(r);
                strv_freep(&p->listen);
                p->listen = NULL;
                r = sd_bus_message_read_strv(reply, &p->listen);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        } else
                r = sd_bus_message_skip(reply, "v");
        return r < 0 ? log_parse_error(r) : 0;
}

/* The port object at path, from its properties, added to ret: 1, or 0 when the port went away
 * since it was listed. */
static int add_port(sd_bus *bus, const char *path, PortList *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *joined = NULL;
        PortRead p = { .e.path = path };
        int r;

        r = read_properties(bus, path, PORT_INTERFACE, "get the port's properties", true,
                            read_port_property, &p, &reply);
        if (r > 0) {
                joined = strings_join((const char *const *) p.listen, strv_length(p.listen), ' ');
                r = joined ? 1 : log_oom();
        }
        strv_freep(&p.listen);
        if (r <= 0)
                return r;
        p.e.listen_addresses = joined;
        r = port_list_add(ret, &p.e);
        if (r < 0)
                return r;
        return 1;
}

/* ListPorts, then each port from its object. */
static int dbus_list_ports(Daemon *d, char *const *filter, size_t n_filter, PortList *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        sd_bus *bus = bus_of(d);
        const char *sandbox, *path;
        int r;

        r = call_manager(bus, "list the ports", "ListPorts", &reply, "");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "(sssqsqso)");
        if (r < 0)
                return log_parse_error(r);
        while ((r = sd_bus_message_read(reply, "(sssqsqso)", &sandbox, NULL, NULL, NULL, NULL, NULL,
                                        NULL, &path)) > 0) {
                if (!sandbox_selected(sandbox, filter, n_filter))
                        continue;
                r = add_port(bus, path, ret); /* 0: unpublished since it was listed */
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return log_parse_error(r);
        return 0;
}

/* The object path of port (one host port), borrowed from *reply. */
static int lookup_port(sd_bus *bus, const PortRange *port, sd_bus_message **reply,
                       const char **ret_path) {
        int r;

        r = call_manager(bus, "look up the port", "GetPort", reply, "ssq", port->protocol,
                         port->host_address, port->host_first);
        if (r < 0)
                return r;
        r = sd_bus_message_read(*reply, "o", ret_path);
        return r < 0 ? log_parse_error(r) : 0;
}

static int dbus_get_port(Daemon *d, const PortRange *port, PortList *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        sd_bus *bus = bus_of(d);
        const char *path;
        int r;

        r = lookup_port(bus, port, &reply, &path);
        if (r < 0)
                return r;
        r = add_port(bus, path, ret);
        if (r == 0)
                return log_error_errno(ENOENT, "The port went away while it was looked at.");
        return r < 0 ? r : 0;
}

/* sandboxes */

/* 0 when the sandbox went away since it was listed. */
typedef struct SandboxRead {
        SandboxEntry e;
        char **guests;
        int machine;
} SandboxRead;

static int read_sandbox_property(sd_bus_message *reply, const char *name, void *userdata) {
        SandboxRead *sr = userdata;
        int r;

        if (strcmp(name, "GuestAddresses") == 0) {
                r = sd_bus_message_enter_container(reply, 'v', "as");
                if (r >= 0) {
                        strv_freep(&sr->guests);
                        sr->guests = NULL;
                        r = sd_bus_message_read_strv(reply, &sr->guests);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        } else if (strcmp(name, "Owner") == 0)
                r = sd_bus_message_read(reply, "v", "u", &sr->e.owner);
        else if (strcmp(name, "Machine") == 0)
                r = sd_bus_message_read(reply, "v", "b", &sr->machine);
        else if (strcmp(name, "ActiveSessions") == 0)
                r = sd_bus_message_read(reply, "v", "t", &sr->e.active_sessions);
        else
                r = sd_bus_message_skip(reply, "v");
        return parsed(r);
}

static int add_sandbox(sd_bus *bus, const char *id, const char *path, uint32_t n_ports,
                       SandboxList *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        SandboxRead sr = { .e = { .id = id, .path = path, .n_ports = n_ports } };
        int r;

        r = read_properties(bus, path, SANDBOX_INTERFACE, "get the sandbox's properties", true,
                            read_sandbox_property, &sr, &reply);
        if (r > 0) {
                sr.e.machine = sr.machine;
                r = sandbox_list_add(ret, &sr.e, (const char *const *) sr.guests,
                                     strv_length(sr.guests));
        }
        strv_freep(&sr.guests);
        return r;
}

static int dbus_list_sandboxes(Daemon *d, SandboxList *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        sd_bus *bus = bus_of(d);
        const char *id, *path;
        uint32_t n_ports;
        int r;

        r = call_manager(bus, "list the sandboxes", "ListSandboxes", &reply, "");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "(sou)");
        if (r < 0)
                return log_parse_error(r);
        while ((r = sd_bus_message_read(reply, "(sou)", &id, &path, &n_ports)) > 0) {
                r = add_sandbox(bus, id, path, n_ports, ret);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return log_parse_error(r);
        return 0;
}

/* publish, unpublish */

static int append_options(sd_bus_message *m, const PublishArgs *a) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        if (a->has_max_sessions) {
                r = sd_bus_message_append(m, "{sv}", "MaxSessions", "u", a->max_sessions);
                if (r < 0)
                        return r;
        }
        if (a->has_idle_timeout) {
                r = sd_bus_message_append(m, "{sv}", "IdleTimeoutUSec", "t", a->idle_timeout_usec);
                if (r < 0)
                        return r;
        }
        if (a->proxy_protocol) {
                r = sd_bus_message_append(m, "{sv}", "ProxyProtocol", "s", a->proxy_protocol);
                if (r < 0)
                        return r;
        }
        if (a->bind_to_caller) {
                r = sd_bus_message_append(m, "{sv}", "BindToCaller", "b", 1);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

/* Appends the tuples of every range: (ssqq) with guest ports, else (ssq). */
static int append_tuples(sd_bus_message *m, const PortRange *ranges, size_t n, bool with_guest) {
        int r;

        r = sd_bus_message_open_container(m, 'a', with_guest ? "(ssqq)" : "(ssq)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                for (unsigned k = 0; k < port_range_size(&ranges[i]); k++) {
                        if (with_guest)
                                r = sd_bus_message_append(m, "(ssqq)", ranges[i].protocol,
                                                          ranges[i].host_address,
                                                          port_range_host(&ranges[i], k),
                                                          port_range_guest(&ranges[i], k));
                        else
                                r = sd_bus_message_append(m, "(ssq)", ranges[i].protocol,
                                                          ranges[i].host_address,
                                                          port_range_host(&ranges[i], k));
                        if (r < 0)
                                return r;
                }
        return sd_bus_message_close_container(m);
}

static int dbus_publish(Daemon *d, const PublishArgs *a, PublishedList *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        const char *sandbox_path, *protocol, *address, *path;
        uint16_t host_port, guest_port;
        sd_bus *bus = bus_of(d);
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE,
                                           "PublishPorts");
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_message_append(m, "s", a->sandbox);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "s");
        for (size_t i = 0; r >= 0 && i < a->n_guests; i++)
                r = sd_bus_message_append(m, "s", a->guests[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = append_tuples(m, a->ranges, a->n_ranges, true);
        if (r >= 0)
                r = append_options(m, a);
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
                r = published_list_add(ret, protocol, address, host_port, guest_port, path);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return log_parse_error(r);
        return 0;
}

static int dbus_unpublish(Daemon *d, const char *sandbox, const PortRange *ranges, size_t n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus *bus = bus_of(d);
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE,
                                           "UnpublishPorts");
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_message_append(m, "s", sandbox);
        if (r >= 0)
                r = append_tuples(m, ranges, n, false);
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_call(bus, m, 0, &error, NULL);
        if (r < 0)
                return log_call_error(&error, r, "unpublish");
        return 0;
}

static int dbus_remove_sandbox(Daemon *d, const char *sandbox) {
        return call_manager(bus_of(d), "remove the sandbox", "RemoveSandbox", NULL, "s", sandbox);
}

static int dbus_set_guest_addresses(Daemon *d, const char *sandbox, char **addresses) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus *bus = bus_of(d);
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE,
                                           "SetGuestAddresses");
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_message_append(m, "s", sandbox);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, addresses);
        if (r < 0)
                return log_create_error(r);
        r = sd_bus_call(bus, m, 0, &error, NULL);
        if (r < 0)
                return log_call_error(&error, r, "set the guest addresses");
        return 0;
}

/* show */

static bool type_is_basic(char type) {
        return type != 0 && strchr("ybnqiuxtdsog", type);
}

/* A value format_value() can print whole: a basic type or an array of one. */
static bool type_is_printable(char type, const char *contents) {
        return type_is_basic(type) || (type == SD_BUS_TYPE_ARRAY && contents &&
                                       strlen(contents) == 1 && type_is_basic(contents[0]));
}

/* Writes one value the way systemctl show does: arrays space-separated, booleans as yes/no. */
static int format_value(sd_bus_message *m, char type, const char *contents, FILE *f) {
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
                                fputc(' ', f);
                        first = false;
                        r = format_value(m, contents[0], NULL, f);
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
                fprintf(f, "%u", v.y);
                break;
        case 'b':
                fputs(v.b ? "yes" : "no", f);
                break;
        case 'n':
                fprintf(f, "%d", v.n);
                break;
        case 'q':
                fprintf(f, "%u", v.q);
                break;
        case 'i':
                fprintf(f, "%" PRIi32, v.i);
                break;
        case 'u':
                fprintf(f, "%" PRIu32, v.u);
                break;
        case 'x':
                fprintf(f, "%" PRIi64, v.x);
                break;
        case 't':
                fprintf(f, "%" PRIu64, v.t);
                break;
        case 'd':
                fprintf(f, "%g", v.d);
                break;
        default:
                fputs(v.s, f);
                break;
        }
        return 0;
}

/* The value the message is at, as text. */
static int format_value_text(sd_bus_message *m, char type, const char *contents, char **ret) {
        _cleanup_free_ char *text = NULL;
        size_t size;
        FILE *f;
        int r;

        f = open_memstream(&text, &size);
        if (!f)
                return log_oom();
        r = format_value(m, type, contents, f);
        if (fclose(f) != 0)
                return log_oom();
        if (r < 0)
                return log_parse_error(r);
        *ret = TAKE_PTR(text);
        return 0;
}

/* One property as a NAME=VALUE line of show, if its value is printed whole. */
static int read_printable_property(sd_bus_message *reply, const char *name, void *userdata) {
        PropertyList *ret = userdata;
        const char *contents;
        char type;
        int r;

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
                char *value = NULL;

                r = format_value_text(reply, type, contents, &value);
                if (r < 0)
                        return r;
                r = property_list_add(ret, name, value);
                if (r < 0)
                        return r;
        } else {
                r = sd_bus_message_skip(reply, NULL);
                if (r < 0)
                        return log_parse_error(r);
        }
        return parsed(sd_bus_message_exit_container(reply));
}

/* GetAll of path's interface: every property printed whole. */
static int get_properties(sd_bus *bus, const char *path, const char *interface, PropertyList *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = read_properties(bus, path, interface, "get the properties", false,
                            read_printable_property, ret, &reply);
        return r < 0 ? r : 0;
}

static int dbus_show_port(Daemon *d, const PortRange *port, PropertyList *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        sd_bus *bus = bus_of(d);
        const char *path;
        int r;

        r = lookup_port(bus, port, &reply, &path);
        if (r < 0)
                return r;
        return get_properties(bus, path, PORT_INTERFACE, ret);
}

typedef struct StatusRead {
        DaemonStatus *status;
        const char *version; /* borrowed from the reply */
} StatusRead;

static int read_manager_property(sd_bus_message *reply, const char *name, void *userdata) {
        StatusRead *sr = userdata;
        DaemonStatus *ret = sr->status;
        int r;

        if (strcmp(name, "Version") == 0)
                r = sd_bus_message_read(reply, "v", "s", &sr->version);
        else if (strcmp(name, "NSandboxes") == 0)
                r = sd_bus_message_read(reply, "v", "u", &ret->n_sandboxes);
        else if (strcmp(name, "NPorts") == 0)
                r = sd_bus_message_read(reply, "v", "u", &ret->n_ports);
        else if (strcmp(name, "ActiveSessions") == 0)
                r = sd_bus_message_read(reply, "v", "t", &ret->active_sessions);
        else if (strcmp(name, "TotalSessions") == 0)
                r = sd_bus_message_read(reply, "v", "t", &ret->total_sessions);
        else if (strcmp(name, "DefaultMaxSessions") == 0)
                r = sd_bus_message_read(reply, "v", "u", &ret->default_max_sessions);
        else if (strcmp(name, "DefaultUDPIdleTimeoutUSec") == 0)
                r = sd_bus_message_read(reply, "v", "t", &ret->default_udp_idle_timeout_usec);
        else
                r = sd_bus_message_skip(reply, "v");
        return parsed(r);
}

static int dbus_get_status(Daemon *d, DaemonStatus *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        StatusRead sr = { .status = ret };
        int r;

        r = read_properties(bus_of(d), MANAGER_PATH, MANAGER_INTERFACE, "get the daemon's status",
                            false, read_manager_property, &sr, &reply);
        if (r < 0)
                return r;
        ret->version = strdup(sr.version ? sr.version : "");
        if (!ret->version)
                return log_oom();
        return 0;
}

static int dbus_show_daemon(Daemon *d, PropertyList *ret) {
        return get_properties(bus_of(d), MANAGER_PATH, MANAGER_INTERFACE, ret);
}

/* monitor */

typedef struct MonitorCallback {
        monitor_event_t on_event;
        void *userdata;
} MonitorCallback;

static int on_manager_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const char *member = sd_bus_message_get_member(m);
        MonitorCallback *cb = userdata;
        MonitorEvent e = {};
        int r;

        if (!member)
                return 0;
        if (strcmp(member, "PortPublished") == 0) {
                e.type = MONITOR_PORT_PUBLISHED;
                r = sd_bus_message_read(m, "sssqo", &e.sandbox, &e.protocol, &e.host_address,
                                        &e.host_port, &e.path);
        } else if (strcmp(member, "PortUnpublished") == 0) {
                e.type = MONITOR_PORT_UNPUBLISHED;
                r = sd_bus_message_read(m, "sssqos", &e.sandbox, &e.protocol, &e.host_address,
                                        &e.host_port, &e.path, &e.reason);
        } else if (strcmp(member, "SandboxNew") == 0) {
                e.type = MONITOR_SANDBOX_NEW;
                r = sd_bus_message_read(m, "so", &e.sandbox, &e.path);
        } else if (strcmp(member, "SandboxRemoved") == 0) {
                e.type = MONITOR_SANDBOX_REMOVED;
                r = sd_bus_message_read(m, "so", &e.sandbox, &e.path);
        } else
                return 0;
        if (r < 0) {
                log_error_errno(r, "Failed to parse signal %s, ignoring: %m", member);
                return 0;
        }
        cb->on_event(&e, cb->userdata);
        return 0;
}

static int dbus_monitor(Daemon *d, int signal_fd, monitor_event_t on_event, void *userdata) {
        MonitorCallback cb = { on_event, userdata };
        sd_bus *bus = bus_of(d);
        int r;

        /* Synchronous: once it returns, the bus delivers every signal sent from here on. */
        r = sd_bus_match_signal(bus, NULL, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, NULL,
                                on_manager_signal, &cb);
        if (r < 0)
                return log_error_errno(r, "Failed to subscribe to the daemon's signals: %m");
        on_event(&(const MonitorEvent){ .type = MONITOR_READY }, userdata);
        return bus_run_until_signal(bus, signal_fd);
}

static int dbus_hold(Daemon *d, int signal_fd) {
        return bus_run_until_signal(bus_of(d), signal_fd);
}

static void dbus_free(Daemon *d) {
        DBusDaemon *b = container_of(d, DBusDaemon, daemon);

        sd_bus_flush_close_unref(b->bus);
        free(b);
}

static const DaemonOps dbus_ops = {
        .list_ports = dbus_list_ports,
        .list_sandboxes = dbus_list_sandboxes,
        .get_port = dbus_get_port,
        .get_status = dbus_get_status,
        .publish = dbus_publish,
        .unpublish = dbus_unpublish,
        .remove_sandbox = dbus_remove_sandbox,
        .set_guest_addresses = dbus_set_guest_addresses,
        .show_port = dbus_show_port,
        .show_daemon = dbus_show_daemon,
        .monitor = dbus_monitor,
        .hold = dbus_hold,
        .free = dbus_free,
};

int dbus_daemon_open(Daemon **ret, BusKind kind, const char *address, bool ask_password) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        DBusDaemon *b;
        int r;

        switch (kind) {
        case BUS_SYSTEM:
                r = sd_bus_open_system(&bus);
                if (r < 0)
                        return log_unreachable(r, "Cannot connect to the system bus: %m");
                break;
        case BUS_USER:
                r = sd_bus_open_user(&bus);
                if (r < 0)
                        return log_unreachable(r, "Cannot connect to the user's bus: %m");
                break;
        case BUS_ADDRESS:
                r = sd_bus_new(&bus);
                if (r < 0)
                        return log_error_errno(r, "Failed to allocate a bus: %m");
                r = sd_bus_set_address(bus, address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, 1);
                if (r >= 0)
                        r = sd_bus_start(bus);
                if (r < 0)
                        return log_unreachable(r, "Cannot connect to the bus at '%s': %m", address);
                break;
        default:
                abort();
        }
        r = sd_bus_set_allow_interactive_authorization(bus, ask_password);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the bus: %m");
        b = calloc(1, sizeof *b);
        if (!b)
                return log_oom();
        *b = (DBusDaemon){ .daemon = { .ops = &dbus_ops, .name = BUS_NAME }, .bus = TAKE_PTR(bus) };
        *ret = &b->daemon;
        return 0;
}
