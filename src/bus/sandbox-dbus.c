/* The D-Bus face of a sandbox: io.portpub.Publisher1.Sandbox on /io/portpub/Publisher1/sandbox/<id> */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "manager-dbus.h"

int sandbox_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                        void **found, sd_bus_error *error) {
        _cleanup_free_ char *id = NULL;
        Sandbox *s;
        int r;

        r = sd_bus_path_decode(path, SANDBOX_PATH_PREFIX, &id);
        if (r <= 0)
                return r;
        s = manager_find_sandbox(manager_dbus_manager(userdata), id);
        if (!s)
                return 0;
        *found = s;
        return 1;
}

int sandbox_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
                            sd_bus_error *error) {
        Manager *m = manager_dbus_manager(userdata);
        char **l;
        size_t i = 0;
        int r;

        l = calloc(manager_n_sandboxes(m) + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        MANAGER_FOREACH_SANDBOX(s, m) {
                r = sandbox_dbus_path(s, &l[i]);
                if (r < 0) {
                        while (i > 0)
                                free(l[--i]);
                        free(l);
                        return r;
                }
                i++;
        }
        *nodes = l;
        return 1;
}

static int property_get_guest_addresses(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        Sandbox *s = userdata;
        char buf[INET6_ADDRSTRLEN];
        int r;

        r = sd_bus_message_open_container(reply, 'a', "s");
        if (r < 0)
                return r;
        if (s->guest4.sa.sa_family != AF_UNSPEC) {
                r = sd_bus_message_append(reply, "s",
                                          sockaddr_format_ip(&s->guest4, buf, sizeof buf));
                if (r < 0)
                        return r;
        }
        if (s->guest6.sa.sa_family != AF_UNSPEC) {
                r = sd_bus_message_append(reply, "s",
                                          sockaddr_format_ip(&s->guest6, buf, sizeof buf));
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int property_get_ports(sd_bus *bus, const char *path, const char *interface,
                              const char *property, sd_bus_message *reply, void *userdata,
                              sd_bus_error *error) {
        Sandbox *s = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        SANDBOX_FOREACH_PORT(p, s) {
                char buf[PORT_PATH_MAX];

                r = sd_bus_message_append(reply, "o", port_dbus_path(p, buf));
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int property_get_machine(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply, void *userdata,
                                sd_bus_error *error) {
        Sandbox *s = userdata;

        return sd_bus_message_append(reply, "b", (int) s->machine);
}

static int property_get_active_sessions(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        return sd_bus_message_append(reply, "t", sandbox_active_sessions(userdata));
}

/* The request names the sandbox by id: it may be gone by the time the caller is known. */
static int mutate(sd_bus_message *message, const Sandbox *s, const DBusMutation *how,
                  sd_bus_error *error) {
        return manager_dbus_mutate(message, manager_dbus_from_message(message), s->id, how, error);
}

static int method_publish_ports(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        static const DBusMutation how = { .type = MANAGER_REQUEST_PUBLISH,
                                          .specs = true,
                                          .specs_guest_port = true,
                                          .options = true,
                                          .reply = DBUS_REPLY_PUBLISHED };

        return mutate(message, userdata, &how, error);
}

static int method_unpublish_ports(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        static const DBusMutation how = { .type = MANAGER_REQUEST_UNPUBLISH, .specs = true };

        return mutate(message, userdata, &how, error);
}

static int method_set_guest_addresses(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        static const DBusMutation how = { .type = MANAGER_REQUEST_SET_GUEST_ADDRESSES,
                                          .guest_addresses = true };

        return mutate(message, userdata, &how, error);
}

static int method_remove(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        static const DBusMutation how = { .type = MANAGER_REQUEST_REMOVE_SANDBOX };

        return mutate(message, userdata, &how, error);
}

const sd_bus_vtable sandbox_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", NULL, offsetof(Sandbox, id), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("GuestAddresses", "as", property_get_guest_addresses, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Ports", "ao", property_get_ports, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Owner", "u", NULL, offsetof(Sandbox, owner), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Machine", "b", property_get_machine, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActiveSessions", "t", property_get_active_sessions, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("PublishPorts", SD_BUS_ARGS("a(ssqq)", ports, "a{sv}", options),
                                SD_BUS_RESULT("a(ssqqo)", published), method_publish_ports,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("UnpublishPorts", SD_BUS_ARGS("a(ssq)", ports), SD_BUS_NO_RESULT,
                                method_unpublish_ports, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetGuestAddresses", SD_BUS_ARGS("as", addresses), SD_BUS_NO_RESULT,
                                method_set_guest_addresses, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Remove", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_remove,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};
