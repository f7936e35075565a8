/* The manager: sandboxes, published ports, limits; knows nothing of D-Bus message formats */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uthash.h>

#include "config.h"
#include "relay-tcp.h"
#include "relay-udp.h"
#include "relay.h"
#include "sockaddr-util.h"

#define SANDBOX_PATH_PREFIX MANAGER_PATH "/sandbox"
#define PORT_PATH_PREFIX MANAGER_PATH "/port"

#define SANDBOX_ID_MAX 64
#define MANAGER_PORTS_PER_CALL_MAX 1024U
#define MANAGER_PORTS_MAX 65536U
#define MANAGER_PORTS_PER_SANDBOX_MAX 65536U
#define MANAGER_SANDBOXES_MAX 4096U
#define MANAGER_MAX_SESSIONS_DEFAULT 4096U
#define MANAGER_MAX_SESSIONS_MAX 1048576U
#define PORT_LISTENERS_MAX 2

/* Expected outcomes of manager calls: positive, to be mapped by the caller. Negative values are
 * real failures (-errno). */
enum {
        MANAGER_OK = 0,
        MANAGER_E_INVALID = 1,
        MANAGER_E_NO_SUCH_SANDBOX,
        MANAGER_E_NO_SUCH_PORT,
        MANAGER_E_PORT_IN_USE,
        MANAGER_E_ADDRESS_NOT_AVAILABLE,
        MANAGER_E_PERMISSION_DENIED,
        MANAGER_E_NO_GUEST_ADDRESS,
        MANAGER_E_LIMIT_EXCEEDED,
};

typedef struct Manager Manager;
typedef struct Sandbox Sandbox;
typedef struct Port Port;

/* Room for a message that names the sandbox, the port and the reason. */
typedef struct ManagerError {
        char message[512];
} ManagerError;

/* What a caller asks to publish, validated: host_address is normalized ("", "*", or the
 * canonical text of a literal address). */
typedef struct PortSpec {
        int proto; /* IPPROTO_TCP or IPPROTO_UDP */
        char host_address[INET6_ADDRSTRLEN];
        uint16_t host_port;
        uint16_t guest_port;
} PortSpec;

typedef struct PortOptions {
        bool bind_to_caller;
        bool has_idle_timeout;
        uint64_t idle_timeout_usec;
        bool has_max_sessions;
        uint32_t max_sessions;
        RelayProxyProtocol proxy_protocol;
} PortOptions;

/* How the D-Bus face hears about changes it must announce. Each may be NULL. Removal events come
 * before the object is freed. */
typedef struct ManagerEvents {
        void (*sandbox_new)(Manager *m, Sandbox *s);
        void (*sandbox_removed)(Manager *m, Sandbox *s);
        void (*sandbox_changed)(Manager *m, Sandbox *s, const char *property);
        void (*port_published)(Manager *m, Port *p);
        void (*port_unpublished)(Manager *m, Port *p, const char *reason);
        void (*port_changed)(Manager *m, Port *p, const char *property);
        void (*port_sessions_changed)(Manager *m, Port *p);
        void (*counts_changed)(Manager *m);
} ManagerEvents;

struct Port {
        Manager *manager;
        Sandbox *sandbox;
        uint64_t serial;
        char *path;
        const char *sandbox_id; /* sandbox->id, for the property table */
        const char *protocol; /* "tcp" or "udp" */
        int proto;
        char *host_address;
        uint16_t host_port;
        uint16_t guest_port;
        char **listen_addresses; /* NULL-terminated */
        SockaddrUnion listen[PORT_LISTENERS_MAX];
        size_t n_listen;

        RelayStats stats;
        TcpRelay *tcp;
        UdpRelay *udp;
        RelayState state;
        char *last_error;

        uint64_t idle_timeout_usec;
        uint32_t max_sessions;
        const char *proxy_protocol;
        bool bind_to_caller;

        uint64_t active_announced; /* ActiveSessions as last signalled */
        uint64_t loop_mark; /* the relay cycle check's visit mark */
        char key[48];
        UT_hash_handle hh; /* manager->ports, by key */
        UT_hash_handle hh_serial; /* manager->ports_by_serial */
        Port *sandbox_next, *sandbox_prev;
};

struct Sandbox {
        Manager *manager;
        char *id;
        char *path;
        SockaddrUnion guest4, guest6; /* AF_UNSPEC when absent */
        uint32_t owner;
        int machine; /* sd-bus reads "b" properties as int */
        Port *ports;
        uint32_t n_ports;
        uint64_t active_announced;
        UT_hash_handle hh;
};

struct Manager {
        struct ev_loop *loop;
        const char *version;
        Sandbox *sandboxes;
        Port *ports;
        Port *ports_by_serial;
        uint32_t n_sandboxes;
        uint32_t n_ports;
        uint64_t next_serial;
        uint64_t total_sessions_gone; /* TotalSessions of ports no longer published */
        uint64_t loop_marks; /* last visit mark the relay cycle check handed out */
        uint32_t default_max_sessions;
        uint64_t default_udp_idle_timeout_usec;
        const ManagerEvents *events;
        void *userdata;
};

int manager_new(Manager **ret, struct ev_loop *loop);
Manager *manager_free(Manager *m);
void manager_set_events(Manager *m, const ManagerEvents *events, void *userdata);

/* Unpublishes everything with the given reason (e.g. "shutdown"). */
void manager_remove_all(Manager *m, const char *reason);

const char *manager_result_to_string(int r);

int sandbox_id_is_valid(const char *id);
/* Parses one guest address into *guest4 or *guest6; fails on a second one of the same family. */
int manager_parse_guest_address(const char *s, SockaddrUnion *guest4, SockaddrUnion *guest6,
                                ManagerError *e);
/* Parses and normalizes protocol/host address/ports into spec. */
int manager_parse_port_spec(const char *protocol, const char *host_address, uint16_t host_port,
                            uint16_t guest_port, bool need_guest_port, PortSpec *spec,
                            ManagerError *e);

Sandbox *manager_find_sandbox(Manager *m, const char *id);
Port *manager_find_port(Manager *m, int proto, const char *host_address, uint16_t host_port);
Port *manager_find_port_by_serial(Manager *m, uint64_t serial);

/* All or nothing. guest4/guest6 NULL (or both AF_UNSPEC) keep the sandbox's addresses. On success
 * ret_ports[i] is the port of specs[i]. */
int manager_publish(Manager *m, const char *sandbox_id, const SockaddrUnion *guest4,
                    const SockaddrUnion *guest6, uint32_t owner, const PortSpec *specs, size_t n,
                    const PortOptions *options, Sandbox **ret_sandbox, Port **ret_ports,
                    ManagerError *e);
int manager_unpublish(Manager *m, Sandbox *s, const PortSpec *specs, size_t n, const char *reason,
                      ManagerError *e);
void manager_unpublish_port(Manager *m, Port *p, const char *reason);
void manager_remove_sandbox(Manager *m, Sandbox *s, const char *reason);
int manager_set_guest_addresses(Manager *m, Sandbox *s, const SockaddrUnion *guest4,
                                const SockaddrUnion *guest6, ManagerError *e);

uint64_t manager_active_sessions(Manager *m);
uint64_t manager_total_sessions(Manager *m);
uint64_t sandbox_active_sessions(Sandbox *s);
/* The address new sessions of this port go to ("" when there is none). */
const char *port_guest_address(Port *p, char *buf, size_t size);
const char *port_state_to_string(RelayState s);
