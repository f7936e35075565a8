/* The GuestResolver that asks systemd-machined, and its MachineRemoved signals
 *
 * A new sandbox published without guest addresses is looked up as a machine of the same name:
 * GetMachineAddresses, asynchronously, and the first IPv4 and the first IPv6 address that is not
 * link-local (a link-local one needs an interface to mean anything). Each way of not finding
 * one has its own message: machined is not on the bus, it knows no such machine, it knows the
 * machine but no usable address, or it failed. A sandbox made that way follows its machine:
 * MachineRemoved removes it. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "machined.h"
#include "macro.h"

#define MACHINED_NAME "org.freedesktop.machine1"
#define MACHINED_PATH "/org/freedesktop/machine1"
#define MACHINED_INTERFACE "org.freedesktop.machine1.Manager"

typedef struct MachinedLookup MachinedLookup;

struct MachinedResolver {
        GuestResolver resolver;
        sd_bus *bus;
        Manager *manager;
        sd_bus_slot *removed_slot;
        MachinedLookup *lookups;
};

struct MachinedLookup {
        MachinedResolver *mr;
        sd_bus_slot *slot;
        char *id;
        guest_resolve_done_t done;
        void *userdata;
        MachinedLookup *next, *prev;
};

static MachinedLookup *lookup_free(MachinedLookup *l) {
        if (!l)
                return NULL;
        if (l->prev)
                l->prev->next = l->next;
        else
                l->mr->lookups = l->next;
        if (l->next)
                l->next->prev = l->prev;
        sd_bus_slot_unref(l->slot);
        free(l->id);
        free(l);
        return NULL;
}

static bool error_means_absent(const sd_bus_error *e) {
        return sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN,
                                      SD_BUS_ERROR_NAME_HAS_NO_OWNER, SD_BUS_ERROR_UNKNOWN_OBJECT,
                                      SD_BUS_ERROR_UNKNOWN_INTERFACE, SD_BUS_ERROR_UNKNOWN_METHOD);
}

/* Reads a(iay): the first IPv4 and the first IPv6 that is not link-local. */
static int read_addresses(sd_bus_message *reply, SockaddrUnion *g4, SockaddrUnion *g6) {
        int r;

        r = sd_bus_message_enter_container(reply, 'a', "(iay)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'r', "iay")) > 0) {
                const void *bytes;
                size_t n;
                int32_t family;

                r = sd_bus_message_read(reply, "i", &family);
                if (r < 0)
                        return r;
                r = sd_bus_message_read_array(reply, 'y', &bytes, &n);
                if (r < 0)
                        return r;
                if (family == AF_INET && n == sizeof(struct in_addr) &&
                    g4->sa.sa_family == AF_UNSPEC) {
                        g4->in.sin_family = AF_INET;
                        memcpy(&g4->in.sin_addr, bytes, n);
                } else if (family == AF_INET6 && n == sizeof(struct in6_addr) &&
                           g6->sa.sa_family == AF_UNSPEC) {
                        struct in6_addr a;

                        memcpy(&a, bytes, n);
                        if (!IN6_IS_ADDR_LINKLOCAL(&a)) {
                                g6->in6.sin6_family = AF_INET6;
                                g6->in6.sin6_addr = a;
                        }
                }
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(reply);
}

static int lookup_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        MachinedLookup *l = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        SockaddrUnion g4 = {}, g6 = {};
        char message[512] = "";
        int r = 0;

        l->slot = sd_bus_slot_unref(l->slot);
        if (e && sd_bus_error_has_name(e, "org.freedesktop.machine1.NoSuchMachine")) {
                r = GUEST_RESOLVE_UNKNOWN;
                (void) snprintf(
                        message, sizeof message,
                        "No guest address for new sandbox '%s': none was given, and systemd-machined knows no machine '%s'",
                        l->id, l->id);
        } else if (e && error_means_absent(e)) {
                r = GUEST_RESOLVE_UNAVAILABLE;
                (void) snprintf(
                        message, sizeof message,
                        "No guest address for new sandbox '%s': none was given, and systemd-machined is not there to ask (%s)",
                        l->id, e->name);
        } else if (e) {
                r = GUEST_RESOLVE_UNAVAILABLE;
                (void) snprintf(
                        message, sizeof message,
                        "No guest address for new sandbox '%s': none was given, and systemd-machined could not be asked: %s: %s",
                        l->id, e->name, e->message ? e->message : "");
        } else if (read_addresses(reply, &g4, &g6) < 0) {
                r = GUEST_RESOLVE_UNAVAILABLE;
                (void) snprintf(
                        message, sizeof message,
                        "No guest address for new sandbox '%s': none was given, and systemd-machined's answer could not be read",
                        l->id);
        } else if (g4.sa.sa_family == AF_UNSPEC && g6.sa.sa_family == AF_UNSPEC) {
                r = GUEST_RESOLVE_UNKNOWN;
                (void) snprintf(
                        message, sizeof message,
                        "No guest address for new sandbox '%s': none was given, and systemd-machined knows no IPv4 or non-link-local IPv6 address of machine '%s'",
                        l->id, l->id);
        }
        if (r)
                log_debug("%s", message);
        else
                log_debug("Guest addresses of sandbox '%s' from systemd-machined.", l->id);
        {
                guest_resolve_done_t done = l->done;
                void *done_userdata = l->userdata;

                lookup_free(l);
                done(done_userdata, r, &g4, &g6, message);
        }
        return 0;
}

static int machined_resolve(GuestResolver *g, const char *sandbox_id, guest_resolve_done_t done,
                            void *userdata, void **ret_pending) {
        MachinedResolver *mr = container_of(g, MachinedResolver, resolver);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        MachinedLookup *l;
        int r;

        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->mr = mr;
        l->done = done;
        l->userdata = userdata;
        l->id = strdup(sandbox_id);
        l->next = mr->lookups;
        if (mr->lookups)
                mr->lookups->prev = l;
        mr->lookups = l;
        if (!l->id) {
                lookup_free(l);
                return -ENOMEM;
        }
        r = sd_bus_message_new_method_call(mr->bus, &m, MACHINED_NAME, MACHINED_PATH,
                                           MACHINED_INTERFACE, "GetMachineAddresses");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", sandbox_id);
        if (r >= 0)
                r = sd_bus_call_async(mr->bus, &l->slot, m, lookup_reply, l, MACHINED_TIMEOUT_USEC);
        if (r < 0) {
                lookup_free(l);
                return r;
        }
        *ret_pending = l;
        return 1;
}

static void machined_cancel(GuestResolver *g, void *pending) {
        lookup_free(pending);
}

static const GuestResolverOps machined_resolver_ops = {
        .resolve = machined_resolve,
        .cancel = machined_cancel,
};

static int on_machine_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        MachinedResolver *mr = userdata;
        const char *name, *path;

        if (sd_bus_message_read(m, "so", &name, &path) < 0)
                return 0;
        if (manager_machine_removed(mr->manager, name))
                log_info("Machine '%s' is gone: removed its sandbox.", name);
        return 0;
}

int machined_resolver_new(MachinedResolver **ret, sd_bus *bus, Manager *m) {
        MachinedResolver *mr;
        int r;

        mr = calloc(1, sizeof *mr);
        if (!mr)
                return -ENOMEM;
        mr->resolver.ops = &machined_resolver_ops;
        mr->bus = sd_bus_ref(bus);
        mr->manager = m;
        r = sd_bus_match_signal_async(bus, &mr->removed_slot, MACHINED_NAME, MACHINED_PATH,
                                      MACHINED_INTERFACE, "MachineRemoved", on_machine_removed,
                                      NULL, mr);
        if (r < 0) {
                machined_resolver_free(mr);
                return r;
        }
        *ret = mr;
        return 0;
}

GuestResolver *machined_resolver_get(MachinedResolver *mr) {
        return &mr->resolver;
}

MachinedResolver *machined_resolver_free(MachinedResolver *mr) {
        if (!mr)
                return NULL;
        while (mr->lookups)
                lookup_free(mr->lookups);
        sd_bus_slot_unref(mr->removed_slot);
        sd_bus_unref(mr->bus);
        free(mr);
        return NULL;
}
