/* The D-Bus face of the manager: Manager interface, object manager, signals */
#pragma once

#include <ev.h>
#include <systemd/sd-bus.h>

#include "manager.h"

#define MANAGER_INTERFACE "io.portpub.Publisher1.Manager"
#define SANDBOX_INTERFACE "io.portpub.Publisher1.Sandbox"
#define PORT_INTERFACE "io.portpub.Publisher1.Port"

typedef struct ManagerDBus ManagerDBus;

/* Exports the objects on bus and hooks into m's events. */
int manager_dbus_new(ManagerDBus **ret, Manager *m, sd_bus *bus);
ManagerDBus *manager_dbus_free(ManagerDBus *d);

/* Shared by the Manager and Sandbox interfaces. sandbox_id is validated here. guest_addresses
 * NULL means "not given". reply_path: the Manager's reply carries the sandbox path first. */
int manager_dbus_publish(sd_bus_message *message, Manager *m, const char *sandbox_id,
                         sd_bus_error *error, int reply_path);
int manager_dbus_unpublish(sd_bus_message *message, Manager *m, Sandbox *s, sd_bus_error *error);
int manager_dbus_set_guest_addresses(sd_bus_message *message, Manager *m, Sandbox *s,
                                     sd_bus_error *error);
int manager_dbus_map_result(int r, const ManagerError *e, sd_bus_error *error);

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
