/* portpubctl's parts: what the daemon is asked, what it answers, and the transports that ask it
 *
 * Each verb parses its arguments, asks the daemon through one transport (D-Bus in ctl-dbus.c,
 * varlink in ctl-varlink.c), which fills the plain structs below, and prints them with one
 * printer (portpubctl.c): both transports print the same. */
#pragma once

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "spec.h"

/* Messages */

/* Prints "portpubctl: MESSAGE" to stderr and returns -|error| (or -EINVAL for 0); %m in format
 * expands to strerror(|error|). */
int log_error_errno(int error, const char *format, ...) _printf_(2, 3);
#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

/* Exit status 3: the daemon could not be reached at all (no bus, nobody owns the name, no
 * varlink socket), as opposed to 1 for a call it refused or failed. */
#define EXIT_NO_DAEMON 3
/* Set by a transport that could not reach the daemon, for exit status EXIT_NO_DAEMON. */
extern bool daemon_unreachable;
#define log_unreachable(error, ...) (daemon_unreachable = true, log_error_errno(error, __VA_ARGS__))

/* What is asked */

typedef struct PublishArgs {
        const char *sandbox;
        const char *const *guests;
        size_t n_guests;
        const PortRange *ranges; /* with guest ports */
        size_t n_ranges;
        bool has_max_sessions;
        uint32_t max_sessions;
        bool has_idle_timeout;
        uint64_t idle_timeout_usec;
        const char *proxy_protocol; /* NULL: the daemon's default */
        bool bind_to_caller;
} PublishArgs;

/* Whether sandbox id is one of filter[0..n_filter), or n_filter is 0. */
bool sandbox_selected(const char *id, char *const *filter, size_t n_filter);

/* What is answered. The lists own copies of the strings they are given. */

/* Grows *array of *allocated elements of size bytes to hold need; -ENOMEM. */
int array_grow(void **array, size_t *allocated, size_t need, size_t size);

/* l[0..n) joined by sep, "" for none; NULL when out of memory. */
char *strings_join(const char *const *l, size_t n, char sep);

typedef struct PortEntry {
        char *strings; /* owns the strings below */
        const char *sandbox, *protocol, *host_address, *guest_address, *state, *path;
        const char *last_error, *proxy_protocol;
        const char *listen_addresses; /* space-separated: "127.0.0.1:8080 [::1]:8080" */
        uint16_t host_port, guest_port;
        uint32_t active_sessions, max_sessions;
        uint64_t total_sessions, rejected_sessions, failed_sessions;
        uint64_t bytes_to_guest, bytes_from_guest, idle_timeout_usec;
} PortEntry;

typedef struct PortList {
        PortEntry *entries;
        size_t n, allocated;
} PortList;

/* Adds a copy of e (its strings are copied; e->strings is ignored). */
int port_list_add(PortList *l, const PortEntry *e);
void port_list_done(PortList *l);

typedef struct SandboxEntry {
        char *strings;
        const char *id, *path;
        const char *guest_addresses; /* "10.0.0.2,fd00::2", "" for none */
        uint32_t n_ports;
        uint32_t owner; /* uid of the caller that created it */
        bool machine; /* follows the systemd-machined machine of its id */
        uint64_t active_sessions;
} SandboxEntry;

typedef struct SandboxList {
        SandboxEntry *entries;
        size_t n, allocated;
} SandboxList;

/* Adds a copy of e with guest_addresses joined by commas (e->guest_addresses is ignored). */
int sandbox_list_add(SandboxList *l, const SandboxEntry *e, const char *const *guest_addresses,
                     size_t n_guest_addresses);
void sandbox_list_done(SandboxList *l);

/* One port of a publish reply, in the order asked. */
typedef struct PublishedPort {
        char *strings;
        const char *protocol, *host_address, *path;
        uint16_t host_port, guest_port;
} PublishedPort;

typedef struct PublishedList {
        PublishedPort *entries;
        size_t n, allocated;
} PublishedList;

int published_list_add(PublishedList *l, const char *protocol, const char *host_address,
                       uint16_t host_port, uint16_t guest_port, const char *path);
void published_list_done(PublishedList *l);

/* NAME=VALUE lines of show: values as "systemctl show" prints them. */
typedef struct Property {
        char *name, *value;
} Property;

typedef struct PropertyList {
        Property *entries;
        size_t n, allocated;
} PropertyList;

/* Takes value (also on failure). */
int property_list_add(PropertyList *l, const char *name, char *value);
void property_list_done(PropertyList *l);

/* The daemon's own figures: the Manager object's properties, varlink's GetStatus. */
typedef struct DaemonStatus {
        char *version;
        uint32_t n_sandboxes, n_ports, default_max_sessions;
        uint64_t active_sessions, total_sessions, default_udp_idle_timeout_usec;
} DaemonStatus;

void daemon_status_done(DaemonStatus *s);

/* One announcement of the daemon, for monitor; its strings are borrowed for the callback. */
typedef enum MonitorEventType {
        MONITOR_READY, /* subscribed: every change from now on is announced */
        MONITOR_SANDBOX_NEW,
        MONITOR_SANDBOX_REMOVED,
        MONITOR_PORT_PUBLISHED,
        MONITOR_PORT_UNPUBLISHED,
} MonitorEventType;

typedef struct MonitorEvent {
        MonitorEventType type;
        const char *sandbox, *path; /* path: the sandbox's or the port's D-Bus object */
        const char *protocol, *host_address, *reason;
        uint16_t host_port;
} MonitorEvent;

typedef void (*monitor_event_t)(const MonitorEvent *e, void *userdata);

/* The transports */

typedef struct Daemon Daemon;

/* Every operation reports its own failure (one line on stderr) and returns < 0 then. */
typedef struct DaemonOps {
        /* The ports of the sandboxes in filter, or of all when n_filter is 0. */
        int (*list_ports)(Daemon *d, char *const *filter, size_t n_filter, PortList *ret);
        int (*list_sandboxes)(Daemon *d, SandboxList *ret);
        /* port: one host port, no guest port; adds it to ret */
        int (*get_port)(Daemon *d, const PortRange *port, PortList *ret);
        int (*get_status)(Daemon *d, DaemonStatus *ret);
        int (*publish)(Daemon *d, const PublishArgs *a, PublishedList *ret);
        int (*unpublish)(Daemon *d, const char *sandbox, const PortRange *ranges, size_t n);
        int (*remove_sandbox)(Daemon *d, const char *sandbox);
        int (*set_guest_addresses)(Daemon *d, const char *sandbox, char **addresses);
        /* port: one host port, no guest port */
        int (*show_port)(Daemon *d, const PortRange *port, PropertyList *ret);
        int (*show_daemon)(Daemon *d, PropertyList *ret);
        /* Calls on_event for every announcement, MONITOR_READY first, until a signal arrives on
         * signal_fd: 0 then. */
        int (*monitor)(Daemon *d, int signal_fd, monitor_event_t on_event, void *userdata);
        /* Keeps the connection (and the ports bound to it) until a signal arrives on signal_fd:
         * 0 then; < 0 when the connection is lost first. */
        int (*hold)(Daemon *d, int signal_fd);
        void (*free)(Daemon *d);
} DaemonOps;

struct Daemon {
        const DaemonOps *ops;
        /* What monitor's first line says it watches, e.g. "io.portpub.Publisher1". */
        const char *name;
};

static inline void daemon_freep(Daemon **d) {
        if (*d)
                (*d)->ops->free(*d);
}

typedef enum BusKind { BUS_SYSTEM, BUS_USER, BUS_ADDRESS } BusKind;

int dbus_daemon_open(Daemon **ret, BusKind kind, const char *address, bool ask_password);
/* io.portpub.publisher1 on the socket at path. */
int varlink_daemon_open(Daemon **ret, const char *path);
