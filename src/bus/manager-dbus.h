/* The D-Bus face of the core: Manager, Sandbox and Port interfaces, object manager, signals */
#pragma once

#include <systemd/sd-bus.h>

#include "config.h"
#include "manager.h"

#define MANAGER_INTERFACE "io.portpub.Publisher1.Manager"
#define SANDBOX_INTERFACE "io.portpub.Publisher1.Sandbox"
#define PORT_INTERFACE "io.portpub.Publisher1.Port"
#define SANDBOX_PATH_PREFIX MANAGER_PATH "/sandbox"
#define PORT_PATH_PREFIX MANAGER_PATH "/port"
/* PORT_PATH_PREFIX "/" and a 64-bit serial */
#define PORT_PATH_MAX (sizeof(PORT_PATH_PREFIX) + 21)

typedef struct ManagerDBus ManagerDBus;

/* Exports the objects on bus and subscribes to m's events. */
int manager_dbus_new(ManagerDBus **ret, Manager *m, sd_bus *bus);
/* Cancels every call still waiting and unexports. Accepts NULL. */
ManagerDBus *manager_dbus_free(ManagerDBus *d);

/* After a restore: the callers of restored caller-bound ports are looked for on the bus; those
 * not there any more lose their ports (reason caller-vanished). */
void manager_dbus_adopt_callers(ManagerDBus *d);

/* Object paths: identity in the core is the sandbox id and the port serial. */
int sandbox_dbus_path(const Sandbox *s, char **ret);
const char *port_dbus_path(const Port *p, char buf[static PORT_PATH_MAX]);

/* Every mutating method, of all three interfaces: asks the bus who the caller is (without
 * blocking), then hands the core a request and replies from its result. args is moved (its
 * pointers are taken, also on failure). reply_path: PublishPorts' reply leads with the sandbox
 * path. */
typedef enum DBusReply {
        DBUS_REPLY_EMPTY,
        DBUS_REPLY_PUBLISHED, /* a(ssqqo) */
        DBUS_REPLY_SANDBOX_AND_PUBLISHED, /* o a(ssqqo) */
} DBusReply;

int manager_dbus_submit(ManagerDBus *d, sd_bus_message *message, ManagerRequestType type,
                        ManagerRequestArgs *args, DBusReply reply, sd_bus_error *error);

/* What a mutating method reads after its sandbox id, and what it replies. */
typedef struct DBusMutation {
        ManagerRequestType type;
        bool guest_addresses; /* as */
        bool specs; /* a(ssqq) with specs_guest_port, else a(ssq) */
        bool specs_guest_port;
        bool options; /* a{sv} */
        DBusReply reply;
} DBusMutation;

/* Reads the arguments how says (the sandbox id first, unless sandbox_id names it: a Sandbox
 * object's methods) and submits the request. */
int manager_dbus_mutate(sd_bus_message *message, ManagerDBus *d, const char *sandbox_id,
                        const DBusMutation *how, sd_bus_error *error);

/* Parsing shared by the Manager and Sandbox interfaces: on failure error says why, quoting the
 * bad value. */
int manager_dbus_read_guest_addresses(sd_bus_message *message, const char *sandbox_id,
                                      ManagerRequestArgs *args, sd_bus_error *error);
int manager_dbus_read_port_specs(sd_bus_message *message, const char *sandbox_id,
                                 bool with_guest_port, ManagerRequestArgs *args, sd_bus_error *error);
int manager_dbus_read_options(sd_bus_message *message, const char *sandbox_id,
                              ManagerRequestArgs *args, sd_bus_error *error);
int manager_dbus_map_result(int r, const ManagerError *e, sd_bus_error *error);

/* The face that exported the object a method was called on. */
ManagerDBus *manager_dbus_from_message(sd_bus_message *message);
Manager *manager_dbus_manager(ManagerDBus *d);

extern const sd_bus_vtable sandbox_vtable[];
int sandbox_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                        void **found, sd_bus_error *error);
int sandbox_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
                            sd_bus_error *error);

extern const sd_bus_vtable port_vtable[];
int port_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                     void **found, sd_bus_error *error);
int port_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
                         sd_bus_error *error);
