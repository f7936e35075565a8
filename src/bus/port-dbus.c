/* The D-Bus face of a published port: io.portpub.Publisher1.Port on /io/portpub/Publisher1/port/<serial> */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "manager-dbus.h"

int port_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                     void **found, sd_bus_error *error) {
        const char *e;
        uint64_t serial;
        char *end;
        Port *p;

        if (strncmp(path, PORT_PATH_PREFIX "/", strlen(PORT_PATH_PREFIX "/")) != 0)
                return 0;
        e = path + strlen(PORT_PATH_PREFIX "/");
        if (*e < '1' || *e > '9')
                return 0;
        errno = 0;
        serial = strtoull(e, &end, 10);
        if (errno != 0 || *end)
                return 0;
        p = manager_find_port_by_serial(manager_dbus_manager(userdata), serial);
        if (!p)
                return 0;
        *found = p;
        return 1;
}

int port_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
                         sd_bus_error *error) {
        Manager *m = manager_dbus_manager(userdata);
        char **l;
        size_t i = 0;

        l = calloc(manager_n_ports(m) + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        MANAGER_FOREACH_PORT(p, m) {
                char buf[PORT_PATH_MAX];

                l[i] = strdup(port_dbus_path(p, buf));
                if (!l[i]) {
                        while (i > 0)
                                free(l[--i]);
                        free(l);
                        return -ENOMEM;
                }
                i++;
        }
        *nodes = l;
        return 1;
}

static int property_get_guest_address(sd_bus *bus, const char *path, const char *interface,
                                      const char *property, sd_bus_message *reply, void *userdata,
                                      sd_bus_error *error) {
        char buf[INET6_ADDRSTRLEN];

        return sd_bus_message_append(reply, "s", port_guest_address(userdata, buf, sizeof buf));
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface,
                              const char *property, sd_bus_message *reply, void *userdata,
                              sd_bus_error *error) {
        Port *p = userdata;

        return sd_bus_message_append(reply, "s", port_state(p));
}

static int property_get_active_sessions(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        Port *p = userdata;

        return sd_bus_message_append(reply, "u", (uint32_t) MIN(p->stats.active, UINT32_MAX));
}

/* By its tuple: the port may be gone by the time the caller is known. */
static int method_unpublish(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Port *p = userdata;
        ManagerRequestArgs args = {};
        PortSpec *spec;

        args.sandbox_id = strdup(p->sandbox->id);
        spec = calloc(1, sizeof *spec);
        if (!args.sandbox_id || !spec) {
                free(args.sandbox_id);
                free(spec);
                return -ENOMEM;
        }
        *spec = (PortSpec){ .proto = p->proto, .host_port = p->host_port };
        (void) snprintf(spec->host_address, sizeof spec->host_address, "%s", p->host_address);
        args.specs = spec;
        args.n_specs = 1;
        return manager_dbus_submit(manager_dbus_from_message(message), message,
                                   MANAGER_REQUEST_UNPUBLISH, &args, DBUS_REPLY_EMPTY, error);
}

const sd_bus_vtable port_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Sandbox", "s", NULL, offsetof(Port, sandbox_id),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Protocol", "s", NULL, offsetof(Port, protocol), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HostAddress", "s", NULL, offsetof(Port, host_address),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HostPort", "q", NULL, offsetof(Port, host_port),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("GuestPort", "q", NULL, offsetof(Port, guest_port),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ListenAddresses", "as", NULL, offsetof(Port, listen_addresses),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("GuestAddress", "s", property_get_guest_address, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastError", "s", NULL, offsetof(Port, last_error),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActiveSessions", "u", property_get_active_sessions, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TotalSessions", "t", NULL, offsetof(Port, stats.total), 0),
        SD_BUS_PROPERTY("RejectedSessions", "t", NULL, offsetof(Port, stats.rejected), 0),
        SD_BUS_PROPERTY("FailedSessions", "t", NULL, offsetof(Port, stats.failed), 0),
        SD_BUS_PROPERTY("BytesToGuest", "t", NULL, offsetof(Port, stats.bytes_to_guest), 0),
        SD_BUS_PROPERTY("BytesFromGuest", "t", NULL, offsetof(Port, stats.bytes_from_guest), 0),
        SD_BUS_PROPERTY("IdleTimeoutUSec", "t", NULL, offsetof(Port, idle_timeout_usec),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("MaxSessions", "u", NULL, offsetof(Port, max_sessions),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ProxyProtocol", "s", NULL, offsetof(Port, proxy_protocol),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("Unpublish", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_unpublish,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};
