/* Trust and lifetime against the real daemon: polkit decides for other uids, machined gives guest
 * addresses and takes sandboxes away, caller-bound ports go with their caller.
 *
 * The bus is a dbus-daemon that admits every uid (test_bus_new_shared()). polkit and machined are
 * fakes this process exports on it, each on a connection of its own, served by a thread of their
 * own so that the test's synchronous calls never keep them from answering. A caller of another
 * uid is this binary again (--client), run as nobody: it makes its own connection, performs the
 * calls given on its command line and prints each reply. */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testlib.h"

#define STRANGER_UID 65534
#define ACTION_PUBLISH "io.portpub.Publisher1.publish"
#define ACTION_PRIVILEGED "io.portpub.Publisher1.publish-privileged"
#define ACTION_MANAGE_ALL "io.portpub.Publisher1.manage-all"
#define ACCESS_DENIED "org.freedesktop.DBus.Error.AccessDenied"
#define NO_GUEST_ADDRESS TEST_ERROR_PREFIX "NoGuestAddress"
#define POLKIT_NAME "org.freedesktop.PolicyKit1"
#define POLKIT_PATH "/org/freedesktop/PolicyKit1/Authority"
#define MACHINED_NAME "org.freedesktop.machine1"
#define MACHINED_PATH "/org/freedesktop/machine1"
#define MACHINED_IFACE "org.freedesktop.machine1.Manager"
/* How long the daemons of these tests wait for polkit (PORTPUB_TEST_POLKIT_TIMEOUT_USEC). */
#define NEVER_TIMEOUT_USEC (4 * G_USEC_PER_SEC)

/* What distinguishes the NoGuestAddress messages from each other. */
#define MSG_MACHINED_ABSENT "not there to ask"
#define MSG_NO_SUCH_MACHINE "knows no machine"
#define MSG_NO_ADDRESS "knows no IPv4 or non-link-local IPv6 address"

/* The fakes */

static const char polkit_xml[] = "<node>"
                                 "  <interface name='org.freedesktop.PolicyKit1.Authority'>"
                                 "    <method name='CheckAuthorization'>"
                                 "      <arg type='(sa{sv})' name='subject' direction='in'/>"
                                 "      <arg type='s' name='action_id' direction='in'/>"
                                 "      <arg type='a{ss}' name='details' direction='in'/>"
                                 "      <arg type='u' name='flags' direction='in'/>"
                                 "      <arg type='s' name='cancellation_id' direction='in'/>"
                                 "      <arg type='(bba{ss})' name='result' direction='out'/>"
                                 "    </method>"
                                 "    <method name='CancelCheckAuthorization'>"
                                 "      <arg type='s' name='cancellation_id' direction='in'/>"
                                 "    </method>"
                                 "  </interface>"
                                 "</node>";

static const char machined_xml[] = "<node>"
                                   "  <interface name='org.freedesktop.machine1.Manager'>"
                                   "    <method name='GetMachineAddresses'>"
                                   "      <arg type='s' name='name' direction='in'/>"
                                   "      <arg type='a(iay)' name='addresses' direction='out'/>"
                                   "    </method>"
                                   "    <signal name='MachineRemoved'>"
                                   "      <arg type='s' name='machine'/>"
                                   "      <arg type='o' name='path'/>"
                                   "    </signal>"
                                   "  </interface>"
                                   "</node>";

typedef enum PolkitRule {
        POLKIT_ALLOW_ALL,
        POLKIT_DENY_ALL,
        POLKIT_ALLOW_LISTED, /* only the actions in Fakes.allowed */
        POLKIT_ERROR,
        POLKIT_NEVER_ANSWER,
} PolkitRule;

typedef enum MachinedRule {
        MACHINED_ADDRESSES, /* answers Fakes.addresses */
        MACHINED_NO_SUCH_MACHINE,
} MachinedRule;

typedef struct Fakes {
        GMainContext *context;
        GMainLoop *loop;
        GThread *thread;
        GMutex lock; /* everything below: the thread answers while the test reads */

        GDBusConnection *polkit_conn;
        guint polkit_id;
        PolkitRule polkit_rule;
        char **allowed;
        GPtrArray *checks; /* of GVariant: the parameters of each CheckAuthorization */
        GPtrArray *cancels; /* of char *: cancellation ids */
        GPtrArray *held; /* of GDBusMethodInvocation: checks never answered */

        GDBusConnection *machined_conn;
        guint machined_id;
        MachinedRule machined_rule;
        GVariant *addresses; /* a(iay) */
        char *unknown; /* a machine it does not know, whatever the rule */
        GPtrArray *lookups; /* of char *: the machines asked for */
} Fakes;

static void polkit_method_call(GDBusConnection *conn, const char *sender, const char *path,
                               const char *iface, const char *method, GVariant *params,
                               GDBusMethodInvocation *invocation, gpointer data) {
        Fakes *f = data;
        const char *action;
        PolkitRule rule;
        gboolean allowed;

        if (strcmp(method, "CancelCheckAuthorization") == 0) {
                const char *id;

                g_variant_get(params, "(&s)", &id);
                g_mutex_lock(&f->lock);
                g_ptr_array_add(f->cancels, g_strdup(id));
                g_mutex_unlock(&f->lock);
                g_dbus_method_invocation_return_value(invocation, NULL);
                return;
        }
        g_variant_get_child(params, 1, "&s", &action);
        g_mutex_lock(&f->lock);
        g_ptr_array_add(f->checks, g_variant_ref(params));
        rule = f->polkit_rule;
        allowed = rule == POLKIT_ALLOW_ALL ||
                  (rule == POLKIT_ALLOW_LISTED && f->allowed &&
                   g_strv_contains((const char *const *) f->allowed, action));
        if (rule == POLKIT_NEVER_ANSWER)
                g_ptr_array_add(f->held, invocation);
        g_mutex_unlock(&f->lock);
        if (rule == POLKIT_NEVER_ANSWER)
                return;
        if (rule == POLKIT_ERROR)
                g_dbus_method_invocation_return_dbus_error(invocation,
                                                           "org.freedesktop.PolicyKit1.Error.Failed",
                                                           "the fake polkit fails on purpose");
        else
                g_dbus_method_invocation_return_value(
                        invocation,
                        g_variant_new("((bb@a{ss}))", allowed, FALSE,
                                      g_variant_new_array(G_VARIANT_TYPE("{ss}"), NULL, 0)));
}

static void machined_method_call(GDBusConnection *conn, const char *sender, const char *path,
                                 const char *iface, const char *method, GVariant *params,
                                 GDBusMethodInvocation *invocation, gpointer data) {
        Fakes *f = data;
        g_autoptr(GVariant) addresses = NULL;
        const char *name;
        MachinedRule rule;

        g_variant_get(params, "(&s)", &name);
        g_mutex_lock(&f->lock);
        g_ptr_array_add(f->lookups, g_strdup(name));
        rule = f->machined_rule;
        if (f->unknown && strcmp(f->unknown, name) == 0)
                rule = MACHINED_NO_SUCH_MACHINE;
        addresses = f->addresses ? g_variant_ref(f->addresses) : NULL;
        g_mutex_unlock(&f->lock);
        if (rule == MACHINED_NO_SUCH_MACHINE)
                g_dbus_method_invocation_return_dbus_error(invocation,
                                                           "org.freedesktop.machine1.NoSuchMachine",
                                                           "No machine by that name");
        else
                g_dbus_method_invocation_return_value(
                        invocation,
                        g_variant_new("(@a(iay))",
                                      addresses ? addresses
                                                : g_variant_new_array(G_VARIANT_TYPE("(iay)"), NULL,
                                                                      0)));
}

static const GDBusInterfaceVTable polkit_vtable = { .method_call = polkit_method_call };
static const GDBusInterfaceVTable machined_vtable = { .method_call = machined_method_call };

static gpointer fakes_thread(gpointer data) {
        Fakes *f = data;

        g_main_context_push_thread_default(f->context);
        g_main_loop_run(f->loop);
        g_main_context_pop_thread_default(f->context);
        return NULL;
}

/* A connection of its own that owns name and serves path, its calls dispatched in the thread. */
static GDBusConnection *fake_export(Fakes *f, const char *address, const char *name,
                                    const char *path, const char *xml,
                                    const GDBusInterfaceVTable *vtable, guint *ret_id) {
        g_autoptr(GDBusNodeInfo) node = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        GDBusConnection *conn;
        guint32 result;

        node = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);
        conn = g_dbus_connection_new_for_address_sync(
                address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        g_assert_no_error(error);
        g_dbus_connection_set_exit_on_close(conn, FALSE);
        /* Method calls go to the main context that is the thread default at registration. */
        g_main_context_push_thread_default(f->context);
        *ret_id = g_dbus_connection_register_object(conn, path, node->interfaces[0], vtable, f,
                                                    NULL, &error);
        g_main_context_pop_thread_default(f->context);
        g_assert_no_error(error);
        reply = g_dbus_connection_call_sync(conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                            "org.freedesktop.DBus", "RequestName",
                                            g_variant_new("(su)", name, 4 /* DO_NOT_QUEUE */),
                                            G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, 5000,
                                            NULL, &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(u)", &result);
        g_assert_cmpuint(result, ==, 1); /* primary owner */
        return conn;
}

static void fakes_start(Fakes *f, const char *address, gboolean polkit, gboolean machined) {
        g_mutex_init(&f->lock);
        f->context = g_main_context_new();
        f->loop = g_main_loop_new(f->context, FALSE);
        f->polkit_rule = POLKIT_DENY_ALL;
        f->checks = g_ptr_array_new_with_free_func((GDestroyNotify) g_variant_unref);
        f->cancels = g_ptr_array_new_with_free_func(g_free);
        f->held = g_ptr_array_new();
        f->lookups = g_ptr_array_new_with_free_func(g_free);
        if (polkit)
                f->polkit_conn = fake_export(f, address, POLKIT_NAME, POLKIT_PATH, polkit_xml,
                                             &polkit_vtable, &f->polkit_id);
        if (machined)
                f->machined_conn = fake_export(f, address, MACHINED_NAME, MACHINED_PATH,
                                               machined_xml, &machined_vtable, &f->machined_id);
        f->thread = g_thread_new("fakes", fakes_thread, f);
}

static void fake_close(GDBusConnection *conn, guint id) {
        if (!conn)
                return;
        g_dbus_connection_unregister_object(conn, id);
        g_dbus_connection_close_sync(conn, NULL, NULL);
        g_object_unref(conn);
}

static void fakes_stop(Fakes *f) {
        g_main_loop_quit(f->loop);
        g_thread_join(f->thread);
        for (guint i = 0; i < f->held->len; i++)
                g_dbus_method_invocation_return_dbus_error(f->held->pdata[i],
                                                           "org.freedesktop.DBus.Error.Failed",
                                                           "the test is over");
        fake_close(f->polkit_conn, f->polkit_id);
        fake_close(f->machined_conn, f->machined_id);
        g_main_loop_unref(f->loop);
        g_main_context_unref(f->context);
        g_ptr_array_free(f->checks, TRUE);
        g_ptr_array_free(f->cancels, TRUE);
        g_ptr_array_free(f->held, TRUE);
        g_ptr_array_free(f->lookups, TRUE);
        g_strfreev(f->allowed);
        if (f->addresses)
                g_variant_unref(f->addresses);
        g_mutex_clear(&f->lock);
        g_clear_pointer(&f->unknown, g_free);
}

/* allowed: NULL-terminated actions for POLKIT_ALLOW_LISTED. */
static void polkit_set_rule(Fakes *f, PolkitRule rule, const char *const *allowed) {
        g_mutex_lock(&f->lock);
        f->polkit_rule = rule;
        g_strfreev(f->allowed);
        f->allowed = g_strdupv((char **) allowed);
        g_mutex_unlock(&f->lock);
}

/* addrs: NULL-terminated literal addresses, answered in this order. */
static void machined_set_addresses(Fakes *f, const char *const *addrs) {
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a(iay)"));
        for (const char *const *a = addrs; a && *a; a++) {
                guint8 bytes[16];
                gboolean v4 = inet_pton(AF_INET, *a, bytes) == 1;

                if (!v4)
                        g_assert_cmpint(inet_pton(AF_INET6, *a, bytes), ==, 1);
                g_variant_builder_add(&b, "(i@ay)", v4 ? AF_INET : AF_INET6,
                                      g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, bytes,
                                                                v4 ? 4 : 16, 1));
        }
        g_mutex_lock(&f->lock);
        if (f->addresses)
                g_variant_unref(f->addresses);
        f->addresses = g_variant_ref_sink(g_variant_builder_end(&b));
        f->machined_rule = MACHINED_ADDRESSES;
        g_mutex_unlock(&f->lock);
}

static void machined_set_rule(Fakes *f, MachinedRule rule) {
        g_mutex_lock(&f->lock);
        f->machined_rule = rule;
        g_mutex_unlock(&f->lock);
}

static void machined_forget(Fakes *f, const char *name) {
        g_mutex_lock(&f->lock);
        g_free(f->unknown);
        f->unknown = g_strdup(name);
        g_mutex_unlock(&f->lock);
}

static void machined_emit_removed(Fakes *f, const char *name) {
        g_autoptr(GError) error = NULL;
        g_autofree char *escaped = g_dbus_escape_object_path(name);
        g_autofree char *path = g_strdup_printf(MACHINED_PATH "/machine/%s", escaped);

        g_dbus_connection_emit_signal(f->machined_conn, NULL, MACHINED_PATH, MACHINED_IFACE,
                                      "MachineRemoved", g_variant_new("(so)", name, path), &error);
        g_assert_no_error(error);
        g_dbus_connection_flush_sync(f->machined_conn, NULL, &error);
        g_assert_no_error(error);
}

static guint fakes_count(Fakes *f, GPtrArray *a) {
        guint n;

        g_mutex_lock(&f->lock);
        n = a->len;
        g_mutex_unlock(&f->lock);
        return n;
}

/* The parameters of the i-th CheckAuthorization. */
static GVariant *polkit_check_at(Fakes *f, guint i) {
        GVariant *v = NULL;

        g_mutex_lock(&f->lock);
        if (i < f->checks->len)
                v = g_variant_ref(f->checks->pdata[i]);
        g_mutex_unlock(&f->lock);
        g_assert_nonnull(v);
        return v;
}

/* How many checks from the first-th on asked for action. */
static guint polkit_count_action(Fakes *f, guint first, const char *action) {
        guint n = 0;

        g_mutex_lock(&f->lock);
        for (guint i = first; i < f->checks->len; i++) {
                const char *a;

                g_variant_get_child(f->checks->pdata[i], 1, "&s", &a);
                n += strcmp(a, action) == 0;
        }
        g_mutex_unlock(&f->lock);
        return n;
}

/* Asserts that the i-th check was about subject_name (a system-bus-name), for action, with these
 * flags and exactly these details: NULL-terminated key, value pairs. */
static void assert_check(Fakes *f, guint i, const char *subject_name, const char *action,
                         guint32 flags, ...) {
        g_autoptr(GVariant) params = polkit_check_at(f, i);
        g_autoptr(GVariant) subject_details = NULL, details = NULL;
        const char *kind, *got_action, *cancellation_id, *name;
        guint32 got_flags;
        guint n_details = 0;
        va_list ap;

        g_variant_get(params, "((&s@a{sv})&s@a{ss}u&s)", &kind, &subject_details, &got_action,
                      &details, &got_flags, &cancellation_id);
        g_assert_cmpstr(kind, ==, "system-bus-name");
        g_assert_cmpuint(g_variant_n_children(subject_details), ==, 1);
        g_assert_true(g_variant_lookup(subject_details, "name", "&s", &name));
        g_assert_cmpstr(name, ==, subject_name);
        g_assert_cmpstr(got_action, ==, action);
        g_assert_cmpuint(got_flags, ==, flags);
        g_assert_cmpstr(cancellation_id, !=, "");
        va_start(ap, flags);
        for (;;) {
                const char *key = va_arg(ap, const char *), *value, *got;

                if (!key)
                        break;
                value = va_arg(ap, const char *);
                if (!g_variant_lookup(details, key, "&s", &got))
                        g_error("check %u (%s): no detail '%s'", i, action, key);
                g_assert_cmpstr(got, ==, value);
                n_details++;
        }
        va_end(ap);
        g_assert_cmpuint(g_variant_n_children(details), ==, n_details);
}

/* The caller of another uid: this binary, run as nobody */

typedef struct ClientReply {
        GVariant *value; /* NULL when the call failed */
        char *error_name;
        char *message;
} ClientReply;

typedef struct Client {
        GSubprocess *proc;
        gboolean done;
        char *output;
        GError *error;
        gint64 started, finished;
        char *name; /* its unique name on the bus */
        GPtrArray *replies; /* of ClientReply, one per call in order */
} Client;

static void client_reply_free(gpointer data) {
        ClientReply *r = data;

        if (r->value)
                g_variant_unref(r->value);
        g_free(r->error_name);
        g_free(r->message);
        g_free(r);
}

static void client_free(Client *c) {
        if (!c)
                return;
        g_clear_object(&c->proc);
        g_free(c->output);
        g_clear_error(&c->error);
        g_free(c->name);
        if (c->replies)
                g_ptr_array_free(c->replies, TRUE);
        g_free(c);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Client, client_free)

/* The calls a client makes: "call" or "icall" (allows interactive authorization), path, interface,
 * method, and the parameters in GVariant text format. */
static void calls_add(GPtrArray *calls, gboolean interactive, const char *path, const char *iface,
                      const char *method, GVariant *params) {
        g_autoptr(GVariant) p = g_variant_ref_sink(params ? params : g_variant_new("()"));

        g_ptr_array_add(calls, g_strdup(interactive ? "icall" : "call"));
        g_ptr_array_add(calls, g_strdup(path));
        g_ptr_array_add(calls, g_strdup(iface));
        g_ptr_array_add(calls, g_strdup(method));
        g_ptr_array_add(calls, g_variant_print(p, TRUE));
}

static void calls_manager(GPtrArray *calls, const char *method, GVariant *params) {
        calls_add(calls, FALSE, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, method, params);
}

static GPtrArray *calls_new(void) {
        return g_ptr_array_new_with_free_func(g_free);
}

/* After fork, before exec: nothing but system calls. */
static void become_stranger(gpointer data) {
        if (setgroups(0, NULL) < 0 || setresgid(STRANGER_UID, STRANGER_UID, STRANGER_UID) < 0 ||
            setresuid(STRANGER_UID, STRANGER_UID, STRANGER_UID) < 0)
                _exit(126);
        /* After the uid change, which clears it. */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void client_communicated(GObject *src, GAsyncResult *res, gpointer data) {
        Client *c = data;

        (void) g_subprocess_communicate_utf8_finish(G_SUBPROCESS(src), res, &c->output, NULL,
                                                    &c->error);
        c->finished = g_get_monotonic_time();
        c->done = TRUE;
}

static Client *client_start(const char *exe, TestBus *bus, GPtrArray *calls) {
        g_autoptr(GSubprocessLauncher) launcher = NULL;
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autoptr(GError) error = NULL;
        Client *c = g_new0(Client, 1);

        g_ptr_array_add(argv, (char *) exe);
        g_ptr_array_add(argv, (char *) "--client");
        g_ptr_array_add(argv, (char *) bus->address);
        for (guint i = 0; i < calls->len; i++)
                g_ptr_array_add(argv, calls->pdata[i]);
        g_ptr_array_add(argv, NULL);
        launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
        g_subprocess_launcher_set_child_setup(launcher, become_stranger, NULL, NULL);
        c->started = g_get_monotonic_time();
        c->proc = g_subprocess_launcher_spawnv(launcher, (const char *const *) argv->pdata, &error);
        g_assert_no_error(error);
        g_subprocess_communicate_utf8_async(c->proc, NULL, NULL, client_communicated, c);
        return c;
}

static gboolean client_is_done(gpointer data) {
        return ((Client *) data)->done;
}

/* Waits for the client to exit and reads what it printed: its uid, its name, a line per call. */
static void client_finish(Client *c, guint timeout_ms) {
        g_auto(GStrv) lines = NULL;
        gboolean had_uid = FALSE;

        if (!test_wait_until(client_is_done, c, timeout_ms)) {
                g_subprocess_force_exit(c->proc);
                g_error("the client did not finish within %u ms", timeout_ms);
        }
        g_assert_no_error(c->error);
        g_assert_true(g_subprocess_get_if_exited(c->proc));
        if (g_subprocess_get_exit_status(c->proc) != 0)
                g_error("the client failed (%d): %s", g_subprocess_get_exit_status(c->proc),
                        c->output);
        c->replies = g_ptr_array_new_with_free_func(client_reply_free);
        lines = g_strsplit(c->output, "\n", -1);
        for (char **l = lines; *l; l++) {
                if (g_str_has_prefix(*l, "uid ")) {
                        g_assert_cmpuint(g_ascii_strtoull(*l + 4, NULL, 10), ==, STRANGER_UID);
                        had_uid = TRUE;
                } else if (g_str_has_prefix(*l, "name "))
                        c->name = g_strdup(*l + 5);
                else if (g_str_has_prefix(*l, "ok ")) {
                        g_autoptr(GError) error = NULL;
                        ClientReply *r = g_new0(ClientReply, 1);

                        r->value = g_variant_parse(NULL, *l + 3, NULL, NULL, &error);
                        g_assert_no_error(error);
                        g_ptr_array_add(c->replies, r);
                } else if (g_str_has_prefix(*l, "error ")) {
                        g_auto(GStrv) parts = g_strsplit(*l + 6, " ", 2);
                        ClientReply *r = g_new0(ClientReply, 1);

                        g_assert_cmpuint(g_strv_length(parts), ==, 2);
                        r->error_name = g_strdup(parts[0]);
                        r->message = g_strdup(parts[1]);
                        g_ptr_array_add(c->replies, r);
                } else
                        g_assert_cmpstr(*l, ==, "");
        }
        g_assert_true(had_uid);
        g_assert_nonnull(c->name);
}

static Client *client_run(const char *exe, TestBus *bus, GPtrArray *calls) {
        Client *c = client_start(exe, bus, calls);

        client_finish(c, 30000);
        g_assert_cmpuint(c->replies->len, ==, calls->len / 5);
        return c;
}

/* The reply of call i, which must have succeeded. */
static GVariant *client_ok(Client *c, guint i) {
        ClientReply *r = c->replies->pdata[i];

        if (!r->value)
                g_error("call %u failed: %s: %s", i, r->error_name, r->message);
        return r->value;
}

/* The message of call i, which must have failed with error_name. */
static const char *client_error(Client *c, guint i, const char *error_name) {
        ClientReply *r = c->replies->pdata[i];

        if (r->value)
                g_error("call %u succeeded, expected %s", i, error_name);
        if (strcmp(r->error_name, error_name) != 0)
                g_error("call %u: expected %s, got %s: %s", i, error_name, r->error_name, r->message);
        return r->message;
}

/* --client ADDRESS {call|icall PATH INTERFACE METHOD PARAMETERS}... */
static int client_main(int argc, char *argv[]) {
        g_autoptr(GDBusConnection) conn = NULL;
        g_autoptr(GError) error = NULL;

        setvbuf(stdout, NULL, _IOLBF, 0);
        if (argc < 1 || (argc - 1) % 5 != 0) {
                fprintf(stderr, "client: bad arguments\n");
                return 2;
        }
        conn = g_dbus_connection_new_for_address_sync(
                argv[0],
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!conn) {
                fprintf(stderr, "client: cannot connect to %s: %s\n", argv[0], error->message);
                return 1;
        }
        printf("uid %u\n", (unsigned) getuid());
        printf("name %s\n", g_dbus_connection_get_unique_name(conn));
        for (int i = 1; i + 5 <= argc; i += 5) {
                g_autoptr(GVariant) params = NULL, reply = NULL;
                GDBusCallFlags flags = strcmp(argv[i], "icall") == 0
                                               ? G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION
                                               : G_DBUS_CALL_FLAGS_NONE;

                params = g_variant_parse(NULL, argv[i + 4], NULL, NULL, &error);
                if (!params) {
                        fprintf(stderr, "client: bad parameters '%s': %s\n", argv[i + 4],
                                error->message);
                        return 2;
                }
                reply = g_dbus_connection_call_sync(conn, TEST_BUS_NAME, argv[i + 1], argv[i + 2],
                                                    argv[i + 3], params, NULL, flags, 60000, NULL,
                                                    &error);
                if (reply) {
                        g_autofree char *text = g_variant_print(reply, TRUE);

                        printf("ok %s\n", text);
                } else {
                        g_autofree char *remote = g_dbus_error_get_remote_error(error);

                        g_dbus_error_strip_remote_error(error);
                        g_strdelimit(error->message, "\n", ' ');
                        printf("error %s %s\n", remote ? remote : "(local)", error->message);
                        g_clear_error(&error);
                }
        }
        (void) g_dbus_connection_close_sync(conn, NULL, NULL);
        return 0;
}

/* The fixture: a shared bus, the fakes it asks for, the daemon, root's signals */

typedef struct Config {
        gboolean polkit;
        gboolean machined;
} Config;

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
        Fakes fakes;
        char *exe;
        GPtrArray *signals; /* of GVariant "(ss@*)": member, path, parameters */
        guint subscription;
} Fixture;

static void on_signal(GDBusConnection *conn, const char *sender, const char *path,
                      const char *iface, const char *member, GVariant *params, gpointer data) {
        Fixture *f = data;

        /* The daemon's: the bus's own and the fakes' are not the daemon changing anything. */
        if (!g_str_has_prefix(path, TEST_MANAGER_PATH))
                return;
        g_ptr_array_add(f->signals,
                        g_variant_ref_sink(g_variant_new("(ss@*)", member, path, params)));
}

static void fixture_setup(Fixture *f, gconstpointer data) {
        const Config *cfg = data;
        g_autoptr(GError) error = NULL;

        f->exe = g_file_read_link("/proc/self/exe", &error);
        g_assert_no_error(error);
        f->bus = test_bus_new_shared();
        fakes_start(&f->fakes, f->bus->address, cfg->polkit, cfg->machined);
        f->daemon = test_daemon_start(f->bus);
        f->signals = g_ptr_array_new_with_free_func((GDestroyNotify) g_variant_unref);
        f->subscription =
                g_dbus_connection_signal_subscribe(f->bus->conn, NULL, NULL, NULL, NULL, NULL,
                                                   G_DBUS_SIGNAL_FLAGS_NONE, on_signal, f, NULL);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_dbus_connection_signal_unsubscribe(f->bus->conn, f->subscription);
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        fakes_stop(&f->fakes);
        g_ptr_array_free(f->signals, TRUE);
        test_bus_free(f->bus);
        g_free(f->exe);
}

/* The daemon's signals sent before a reply reach us before it: after a Ping they are all in. */
static void sync_signals(Fixture *f) {
        test_sync_daemon(f->bus);
}

static guint count_signals(Fixture *f, const char *member) {
        guint n = 0;

        for (guint i = 0; i < f->signals->len; i++) {
                const char *m;

                g_variant_get_child(f->signals->pdata[i], 0, "&s", &m);
                n += strcmp(m, member) == 0;
        }
        return n;
}

/* The parameters of the index-th signal named member. */
static GVariant *signal_params(Fixture *f, const char *member, guint index) {
        for (guint i = 0; i < f->signals->len; i++) {
                const char *m;

                g_variant_get_child(f->signals->pdata[i], 0, "&s", &m);
                if (strcmp(m, member) == 0 && index-- == 0)
                        return g_variant_get_child_value(f->signals->pdata[i], 2);
        }
        g_error("no signal %s number %u", member, index);
        return NULL;
}

/* Root's calls, on the test's own connection */

static GVariant *root_call(Fixture *f, const char *path, const char *iface, const char *method,
                           GVariant *params, const char *reply_type) {
        g_autoptr(GError) error = NULL;
        GVariant *v;

        v = test_call(f->bus, path, iface, method, params, reply_type, &error);
        g_assert_no_error(error);
        return v;
}

static GVariant *strv(const char *a, const char *b) {
        const char *v[] = { a, b, NULL };

        return g_variant_new_strv(v, -1);
}

/* Manager.PublishPorts of one port; guest NULL: none given. */
static GVariant *publish_args(const char *sandbox, const char *guest, const char *proto,
                              const char *host, guint16 host_port, guint16 guest_port) {
        return g_variant_new_parsed("(%s, %@as, [(%s, %s, %q, %q)], @a{sv} {})", sandbox,
                                    strv(guest, NULL), proto, host, host_port, guest_port);
}

/* Publishes one tcp port as root; returns the port's object path, and the bound port. */
static char *root_publish(Fixture *f, const char *sandbox, const char *guest, const char *host,
                          guint16 host_port, guint16 guest_port, guint16 *ret_port) {
        g_autoptr(GVariant) reply = NULL, published = NULL;
        const char *path;
        guint16 hp;

        reply = root_call(f, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                          publish_args(sandbox, guest, "tcp", host, host_port, guest_port),
                          "(oa(ssqqo))");
        published = g_variant_get_child_value(reply, 1);
        g_assert_cmpuint(g_variant_n_children(published), ==, 1);
        g_variant_get_child(published, 0, "(&s&sqq&o)", NULL, NULL, &hp, NULL, &path);
        if (ret_port)
                *ret_port = hp;
        return g_strdup(path);
}

static char *sandbox_path(Fixture *f, const char *id) {
        g_autoptr(GVariant) v = root_call(f, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "GetSandbox",
                                          g_variant_new("(s)", id), "(o)");
        char *path;

        g_variant_get(v, "(o)", &path);
        return path;
}

static guint32 n_ports(Fixture *f) {
        return test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts");
}

static guint32 n_sandboxes(Fixture *f) {
        return test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes");
}

static guint n_sandbox_ports(Fixture *f, const char *id) {
        g_autofree char *path = sandbox_path(f, id);
        g_autoptr(GVariant) ports = test_get_property(f->bus, path, TEST_SANDBOX_IFACE, "Ports");

        return (guint) g_variant_n_children(ports);
}

/* GuestAddresses of a sandbox, joined by ','. */
static char *guest_addresses(Fixture *f, const char *id) {
        g_autofree char *path = sandbox_path(f, id);
        g_autoptr(GVariant) v = test_get_property(f->bus, path, TEST_SANDBOX_IFACE, "GuestAddresses");
        g_autofree const char **a = g_variant_get_strv(v, NULL);

        return g_strjoinv(",", (char **) a);
}

/* The host port and the path of entry i of a published a(ssqqo), in a reply. */
static guint16 published_port(GVariant *reply, guint i, char **ret_path) {
        g_autoptr(GVariant) published = NULL;
        const char *path;
        guint16 hp;

        /* Manager.PublishPorts replies (oa(ssqqo)), Sandbox.PublishPorts (a(ssqqo)). */
        published = g_variant_get_child_value(reply, g_variant_n_children(reply) - 1);
        g_variant_get_child(published, i, "(&s&sqq&o)", NULL, NULL, &hp, NULL, &path);
        if (ret_path)
                *ret_path = g_strdup(path);
        return hp;
}

/* The tests */

/* The fake allows: a stranger's publish succeeds, the sandbox is the stranger's, and polkit was
 * asked exactly once, about that caller, for publish, with the port's details. */
static void test_polkit_allowed(Fixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) calls = calls_new();
        g_autoptr(Client) c = NULL;
        g_autofree char *path = NULL;
        const char *sandbox;

        polkit_set_rule(&f->fakes, POLKIT_ALLOW_ALL, NULL);
        calls_manager(calls, "PublishPorts", publish_args("u-web", "127.0.0.1", "tcp", "", 0, 80));
        c = client_run(f->exe, f->bus, calls);
        g_variant_get_child(client_ok(c, 0), 0, "&o", &sandbox);
        path = sandbox_path(f, "u-web");
        g_assert_cmpstr(sandbox, ==, path);
        g_assert_cmpuint(test_get_u32(f->bus, path, TEST_SANDBOX_IFACE, "Owner"), ==, STRANGER_UID);
        g_assert_cmpuint(n_ports(f), ==, 1);

        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.checks), ==, 1);
        assert_check(&f->fakes, 0, c->name, ACTION_PUBLISH, 0, "sandbox", "u-web", "protocol",
                     "tcp", "host_address", "", "host_port", "0", NULL);
}

/* The fake denies: every mutating call of a stranger, on every object, is AccessDenied after one
 * check for publish, and nothing changes: counts, addresses, no signal. */
static void test_polkit_denied(Fixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) calls = calls_new();
        g_autoptr(Client) c = NULL;
        g_autofree char *port = NULL, *sandbox = NULL, *guests = NULL;
        guint16 hp;
        guint n;

        polkit_set_rule(&f->fakes, POLKIT_DENY_ALL, NULL);
        port = root_publish(f, "r-web", "127.0.0.1", "127.0.0.1", 0, 80, &hp);
        sandbox = sandbox_path(f, "r-web");
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);

        calls_manager(calls, "PublishPorts", publish_args("u-web", "127.0.0.1", "tcp", "", 0, 80));
        calls_manager(calls, "PublishPorts", publish_args("r-web", NULL, "tcp", "127.0.0.1", 0, 81));
        calls_manager(calls, "UnpublishPorts",
                      g_variant_new_parsed("(%s, [(%s, %s, %q)])", "r-web", "tcp", "127.0.0.1", hp));
        calls_manager(calls, "SetGuestAddresses",
                      g_variant_new("(s@as)", "r-web", strv("127.0.0.2", NULL)));
        calls_manager(calls, "RemoveSandbox", g_variant_new("(s)", "r-web"));
        calls_add(calls, FALSE, sandbox, TEST_SANDBOX_IFACE, "PublishPorts",
                  g_variant_new_parsed("([(%s, %s, %q, %q)], @a{sv} {})", "tcp", "127.0.0.1",
                                       (guint16) 0, (guint16) 82));
        calls_add(calls, FALSE, sandbox, TEST_SANDBOX_IFACE, "UnpublishPorts",
                  g_variant_new_parsed("([(%s, %s, %q)],)", "tcp", "127.0.0.1", hp));
        calls_add(calls, FALSE, sandbox, TEST_SANDBOX_IFACE, "SetGuestAddresses",
                  g_variant_new("(@as)", strv("127.0.0.2", NULL)));
        calls_add(calls, FALSE, sandbox, TEST_SANDBOX_IFACE, "Remove", NULL);
        calls_add(calls, FALSE, port, TEST_PORT_IFACE, "Unpublish", NULL);
        c = client_run(f->exe, f->bus, calls);

        n = calls->len / 5;
        for (guint i = 0; i < n; i++)
                g_assert_nonnull(strstr(client_error(c, i, ACCESS_DENIED),
                                        "polkit does not grant " ACTION_PUBLISH));
        /* Denied at the first action asked: nothing else was asked. */
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.checks), ==, n);
        g_assert_cmpuint(polkit_count_action(&f->fakes, 0, ACTION_PUBLISH), ==, n);

        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_assert_cmpuint(n_sandbox_ports(f, "r-web"), ==, 1);
        guests = guest_addresses(f, "r-web");
        g_assert_cmpstr(guests, ==, "127.0.0.1");
        sync_signals(f);
        g_assert_cmpuint(f->signals->len, ==, 0);
}

/* polkit grants publish only: a stranger changes its own sandboxes in every way, but nothing of
 * root's; manage-all was asked exactly for the calls on root's sandbox. */
static void test_owner_only(Fixture *f, gconstpointer data) {
        static const char *const publish_only[] = { ACTION_PUBLISH, NULL };
        g_autoptr(GPtrArray) calls1 = calls_new(), calls2 = calls_new(), calls3 = calls_new(),
                             calls4 = calls_new();
        g_autoptr(Client) c1 = NULL, c2 = NULL, c3 = NULL, c4 = NULL;
        g_autofree char *r_port = NULL, *r_sandbox = NULL, *u_sandbox = NULL, *u_port2 = NULL,
                        *guests = NULL;
        guint16 r_hp, u_hp1, u_hp3;
        guint before, n;

        polkit_set_rule(&f->fakes, POLKIT_ALLOW_LISTED, publish_only);
        r_port = root_publish(f, "r-web", "127.0.0.1", "127.0.0.1", 0, 80, &r_hp);
        r_sandbox = sandbox_path(f, "r-web");

        /* Its own sandboxes: made, published into, re-addressed, unpublished, removed. */
        calls_manager(calls1, "PublishPorts",
                      publish_args("u-web", "127.0.0.1", "tcp", "127.0.0.1", 0, 80));
        calls_manager(calls1, "PublishPorts",
                      publish_args("u-two", "127.0.0.1", "tcp", "127.0.0.1", 0, 80));
        c1 = client_run(f->exe, f->bus, calls1);
        u_hp1 = published_port(client_ok(c1, 0), 0, NULL);
        (void) client_ok(c1, 1);
        u_sandbox = sandbox_path(f, "u-web");
        g_assert_cmpuint(test_get_u32(f->bus, u_sandbox, TEST_SANDBOX_IFACE, "Owner"), ==,
                         STRANGER_UID);

        calls_manager(calls2, "PublishPorts", publish_args("u-web", NULL, "tcp", "127.0.0.1", 0, 81));
        calls_add(calls2, FALSE, u_sandbox, TEST_SANDBOX_IFACE, "PublishPorts",
                  g_variant_new_parsed("([(%s, %s, %q, %q)], @a{sv} {})", "udp", "127.0.0.1",
                                       (guint16) 0, (guint16) 82));
        calls_manager(calls2, "SetGuestAddresses",
                      g_variant_new("(s@as)", "u-web", strv("127.0.0.2", NULL)));
        calls_add(calls2, FALSE, u_sandbox, TEST_SANDBOX_IFACE, "SetGuestAddresses",
                  g_variant_new("(@as)", strv("127.0.0.3", "::1")));
        c2 = client_run(f->exe, f->bus, calls2);
        (void) published_port(client_ok(c2, 0), 0, &u_port2);
        u_hp3 = published_port(client_ok(c2, 1), 0, NULL);
        (void) client_ok(c2, 2);
        (void) client_ok(c2, 3);
        g_assert_cmpuint(n_sandbox_ports(f, "u-web"), ==, 3);
        guests = guest_addresses(f, "u-web");
        g_assert_cmpstr(guests, ==, "127.0.0.3,::1");

        calls_manager(calls3, "UnpublishPorts",
                      g_variant_new_parsed("(%s, [(%s, %s, %q)])", "u-web", "tcp", "127.0.0.1",
                                           u_hp1));
        calls_add(calls3, FALSE, u_sandbox, TEST_SANDBOX_IFACE, "UnpublishPorts",
                  g_variant_new_parsed("([(%s, %s, %q)],)", "udp", "127.0.0.1", u_hp3));
        calls_add(calls3, FALSE, u_port2, TEST_PORT_IFACE, "Unpublish", NULL);
        calls_add(calls3, FALSE, u_sandbox, TEST_SANDBOX_IFACE, "Remove", NULL);
        calls_manager(calls3, "RemoveSandbox", g_variant_new("(s)", "u-two"));
        c3 = client_run(f->exe, f->bus, calls3);
        for (guint i = 0; i < c3->replies->len; i++)
                (void) client_ok(c3, i);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_assert_cmpuint(n_ports(f), ==, 1);

        /* One check each, for publish: its own sandboxes need nothing more. */
        before = fakes_count(&f->fakes, f->fakes.checks);
        g_assert_cmpuint(before, ==, (calls1->len + calls2->len + calls3->len) / 5);
        g_assert_cmpuint(polkit_count_action(&f->fakes, 0, ACTION_PUBLISH), ==, before);

        /* Root's sandbox: every way of changing it is refused. */
        calls_manager(calls4, "PublishPorts", publish_args("r-web", NULL, "tcp", "127.0.0.1", 0, 81));
        calls_add(calls4, FALSE, r_sandbox, TEST_SANDBOX_IFACE, "PublishPorts",
                  g_variant_new_parsed("([(%s, %s, %q, %q)], @a{sv} {})", "tcp", "127.0.0.1",
                                       (guint16) 0, (guint16) 82));
        calls_manager(calls4, "UnpublishPorts",
                      g_variant_new_parsed("(%s, [(%s, %s, %q)])", "r-web", "tcp", "127.0.0.1", r_hp));
        calls_add(calls4, FALSE, r_sandbox, TEST_SANDBOX_IFACE, "UnpublishPorts",
                  g_variant_new_parsed("([(%s, %s, %q)],)", "tcp", "127.0.0.1", r_hp));
        calls_add(calls4, FALSE, r_port, TEST_PORT_IFACE, "Unpublish", NULL);
        calls_manager(calls4, "SetGuestAddresses",
                      g_variant_new("(s@as)", "r-web", strv("127.0.0.2", NULL)));
        calls_add(calls4, FALSE, r_sandbox, TEST_SANDBOX_IFACE, "SetGuestAddresses",
                  g_variant_new("(@as)", strv("127.0.0.2", NULL)));
        calls_manager(calls4, "RemoveSandbox", g_variant_new("(s)", "r-web"));
        calls_add(calls4, FALSE, r_sandbox, TEST_SANDBOX_IFACE, "Remove", NULL);
        c4 = client_run(f->exe, f->bus, calls4);
        n = calls4->len / 5;
        for (guint i = 0; i < n; i++)
                g_assert_nonnull(strstr(client_error(c4, i, ACCESS_DENIED),
                                        "polkit does not grant " ACTION_MANAGE_ALL));

        /* Each asked publish (granted), then manage-all (refused), about r-web. */
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.checks), ==, before + 2 * n);
        g_assert_cmpuint(polkit_count_action(&f->fakes, 0, ACTION_MANAGE_ALL), ==, n);
        g_assert_cmpuint(polkit_count_action(&f->fakes, before, ACTION_PUBLISH), ==, n);
        {
                g_autofree char *port = g_strdup_printf("%u", r_hp);

                /* The Manager's UnpublishPorts: manage-all with the port's details. */
                assert_check(&f->fakes, before + 5, c4->name, ACTION_MANAGE_ALL, 0, "sandbox",
                             "r-web", "protocol", "tcp", "host_address", "127.0.0.1", "host_port",
                             port, NULL);
                /* RemoveSandbox: about the sandbox alone. */
                assert_check(&f->fakes, before + 15, c4->name, ACTION_MANAGE_ALL, 0, "sandbox",
                             "r-web", NULL);
        }
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_assert_cmpuint(n_sandbox_ports(f, "r-web"), ==, 1);
        g_free(guests);
        guests = guest_addresses(f, "r-web");
        g_assert_cmpstr(guests, ==, "127.0.0.1");
}

/* polkit grants manage-all too: the stranger unpublishes the ports of root's sandbox. */
static void test_manage_all(Fixture *f, gconstpointer data) {
        static const char *const granted[] = { ACTION_PUBLISH, ACTION_MANAGE_ALL, NULL };
        g_autoptr(GPtrArray) calls = calls_new();
        g_autoptr(Client) c = NULL;
        g_autofree char *port1 = NULL, *port2 = NULL, *sandbox = NULL, *hp1_s = NULL, *hp2_s = NULL;
        guint16 hp1, hp2;

        polkit_set_rule(&f->fakes, POLKIT_ALLOW_LISTED, granted);
        port1 = root_publish(f, "r-web", "127.0.0.1", "127.0.0.1", 0, 80, &hp1);
        port2 = root_publish(f, "r-web", NULL, "127.0.0.1", 0, 81, &hp2);
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);

        calls_manager(calls, "UnpublishPorts",
                      g_variant_new_parsed("(%s, [(%s, %s, %q)])", "r-web", "tcp", "127.0.0.1", hp1));
        calls_add(calls, FALSE, port2, TEST_PORT_IFACE, "Unpublish", NULL);
        c = client_run(f->exe, f->bus, calls);
        (void) client_ok(c, 0);
        (void) client_ok(c, 1);

        g_assert_cmpuint(n_ports(f), ==, 0);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        sandbox = sandbox_path(f, "r-web");
        g_assert_cmpuint(test_get_u32(f->bus, sandbox, TEST_SANDBOX_IFACE, "Owner"), ==, 0);
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "PortUnpublished"), ==, 2);
        for (guint i = 0; i < 2; i++) {
                g_autoptr(GVariant) s = signal_params(f, "PortUnpublished", i);
                const char *id, *path, *reason;

                g_variant_get(s, "(&s&s&sq&o&s)", &id, NULL, NULL, NULL, &path, &reason);
                g_assert_cmpstr(id, ==, "r-web");
                g_assert_cmpstr(path, ==, i == 0 ? port1 : port2);
                g_assert_cmpstr(reason, ==, "request");
        }

        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.checks), ==, 4);
        g_assert_cmpuint(polkit_count_action(&f->fakes, 0, ACTION_MANAGE_ALL), ==, 2);
        hp1_s = g_strdup_printf("%u", hp1);
        hp2_s = g_strdup_printf("%u", hp2);
        assert_check(&f->fakes, 1, c->name, ACTION_MANAGE_ALL, 0, "sandbox", "r-web", "protocol",
                     "tcp", "host_address", "127.0.0.1", "host_port", hp1_s, NULL);
        assert_check(&f->fakes, 3, c->name, ACTION_MANAGE_ALL, 0, "sandbox", "r-web", "protocol",
                     "tcp", "host_address", "127.0.0.1", "host_port", hp2_s, NULL);
}

static gboolean tcp_port_is_free(guint16 port) {
        struct sockaddr_in sa = { .sin_family = AF_INET,
                                  .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        gboolean ok;

        g_assert_cmpint(fd, >=, 0);
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        ok = bind(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
        close(fd);
        return ok;
}

/* n free tcp ports on 127.0.0.1 below start, from 81 up (if 81 is below it), then down. */
static gboolean privileged_ports(guint start, guint16 *ports, guint n) {
        guint found = 0;

        for (guint p = MIN(81u, start - 1); p < start && found < n; p++)
                if (tcp_port_is_free((guint16) p))
                        ports[found++] = (guint16) p;
        for (guint p = MIN(81u, start - 1); p > 1 && found < n; p--)
                if (tcp_port_is_free((guint16) (p - 1)))
                        ports[found++] = (guint16) (p - 1);
        return found == n;
}

static guint unprivileged_port_start(void) {
        g_autofree char *text = NULL;

        if (!g_file_get_contents("/proc/sys/net/ipv4/ip_unprivileged_port_start", &text, NULL, NULL))
                return 1024;
        return (guint) g_ascii_strtoull(text, NULL, 10);
}

/* 98 kernel-picked ports, then the two privileged ones: 100 in one call. */
static GVariant *hundred_ports(const guint16 privileged[2]) {
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a(ssqq)"));
        for (guint i = 0; i < 98; i++)
                g_variant_builder_add(&b, "(ssqq)", "tcp", "127.0.0.1", (guint16) 0,
                                      (guint16) (1000 + i));
        g_variant_builder_add(&b, "(ssqq)", "tcp", "127.0.0.1", privileged[0], (guint16) 80);
        g_variant_builder_add(&b, "(ssqq)", "tcp", "127.0.0.1", privileged[1], (guint16) 81);
        return g_variant_builder_end(&b);
}

/* A host port below ip_unprivileged_port_start needs publish-privileged, asked with that port's
 * details; refused, it fails the call although publish was granted. Each distinct action is
 * asked once per call, even for 100 ports. */
static void test_privileged_port(Fixture *f, gconstpointer data) {
        static const char *const publish_only[] = { ACTION_PUBLISH, NULL };
        static const char *const all[] = { ACTION_PUBLISH, ACTION_PRIVILEGED, ACTION_MANAGE_ALL,
                                           NULL };
        g_autoptr(GPtrArray) calls1 = calls_new(), calls2 = calls_new();
        g_autoptr(Client) c1 = NULL, c2 = NULL;
        g_autofree char *p1 = NULL;
        g_autoptr(GVariant) published = NULL;
        guint start = unprivileged_port_start();
        guint16 priv[2];
        guint before;

        if (start <= 1) {
                g_test_skip("ip_unprivileged_port_start is 0 or 1: no host port is privileged");
                return;
        }
        if (!privileged_ports(start, priv, 2)) {
                g_test_skip("no two free tcp ports below ip_unprivileged_port_start on 127.0.0.1");
                return;
        }
        p1 = g_strdup_printf("%u", priv[0]);
        g_test_message("privileged ports %u and %u (unprivileged from %u)", priv[0], priv[1], start);

        polkit_set_rule(&f->fakes, POLKIT_ALLOW_LISTED, publish_only);
        calls_manager(calls1, "PublishPorts",
                      publish_args("u-priv", "127.0.0.1", "tcp", "127.0.0.1", priv[0], 80));
        calls_manager(calls1, "PublishPorts",
                      g_variant_new("(s@as@a(ssqq)@a{sv})", "u-priv", strv("127.0.0.1", NULL),
                                    hundred_ports(priv), g_variant_new("a{sv}", NULL)));
        c1 = client_run(f->exe, f->bus, calls1);
        for (guint i = 0; i < 2; i++)
                g_assert_nonnull(strstr(client_error(c1, i, ACCESS_DENIED),
                                        "polkit does not grant " ACTION_PRIVILEGED));
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.checks), ==, 4);
        assert_check(&f->fakes, 0, c1->name, ACTION_PUBLISH, 0, "sandbox", "u-priv", "protocol",
                     "tcp", "host_address", "127.0.0.1", "host_port", p1, NULL);
        assert_check(&f->fakes, 1, c1->name, ACTION_PRIVILEGED, 0, "sandbox", "u-priv", "protocol",
                     "tcp", "host_address", "127.0.0.1", "host_port", p1, NULL);
        /* publish about the first port, publish-privileged about the first privileged one. */
        assert_check(&f->fakes, 2, c1->name, ACTION_PUBLISH, 0, "sandbox", "u-priv", "protocol",
                     "tcp", "host_address", "127.0.0.1", "host_port", "0", NULL);
        assert_check(&f->fakes, 3, c1->name, ACTION_PRIVILEGED, 0, "sandbox", "u-priv", "protocol",
                     "tcp", "host_address", "127.0.0.1", "host_port", p1, NULL);
        g_assert_cmpuint(n_ports(f), ==, 0);
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_true(tcp_port_is_free(priv[0]));

        /* All granted, into root's sandbox: three actions, three checks, 100 ports. */
        polkit_set_rule(&f->fakes, POLKIT_ALLOW_LISTED, all);
        g_free(root_publish(f, "r-priv", "127.0.0.1", "127.0.0.1", 0, 80, NULL));
        before = fakes_count(&f->fakes, f->fakes.checks);
        calls_manager(calls2, "PublishPorts",
                      g_variant_new("(s@as@a(ssqq)@a{sv})", "r-priv", strv(NULL, NULL),
                                    hundred_ports(priv), g_variant_new("a{sv}", NULL)));
        c2 = client_run(f->exe, f->bus, calls2);
        published = g_variant_get_child_value(client_ok(c2, 0), 1);
        g_assert_cmpuint(g_variant_n_children(published), ==, 100);
        g_assert_cmpuint(published_port(client_ok(c2, 0), 98, NULL), ==, priv[0]);
        g_assert_cmpuint(published_port(client_ok(c2, 0), 99, NULL), ==, priv[1]);
        g_assert_cmpuint(n_ports(f), ==, 101);
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.checks), ==, before + 3);
        g_assert_cmpuint(polkit_count_action(&f->fakes, before, ACTION_PUBLISH), ==, 1);
        g_assert_cmpuint(polkit_count_action(&f->fakes, before, ACTION_PRIVILEGED), ==, 1);
        g_assert_cmpuint(polkit_count_action(&f->fakes, before, ACTION_MANAGE_ALL), ==, 1);
}

/* The allow-interactive-authorization flag of the call becomes flags 1 at polkit, on the Manager
 * and on a Sandbox object; without it, 0. */
static void test_interactive_flag(Fixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) calls1 = calls_new(), calls2 = calls_new();
        g_autoptr(Client) c1 = NULL, c2 = NULL;
        g_autofree char *a = NULL, *b = NULL;

        polkit_set_rule(&f->fakes, POLKIT_ALLOW_ALL, NULL);
        calls_add(calls1, TRUE, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                  publish_args("u-a", "127.0.0.1", "tcp", "127.0.0.1", 0, 80));
        calls_add(calls1, FALSE, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                  publish_args("u-b", "127.0.0.1", "tcp", "127.0.0.1", 0, 80));
        c1 = client_run(f->exe, f->bus, calls1);
        (void) client_ok(c1, 0);
        (void) client_ok(c1, 1);
        a = sandbox_path(f, "u-a");
        b = sandbox_path(f, "u-b");
        calls_add(calls2, FALSE, a, TEST_SANDBOX_IFACE, "SetGuestAddresses",
                  g_variant_new("(@as)", strv("127.0.0.2", NULL)));
        calls_add(calls2, TRUE, b, TEST_SANDBOX_IFACE, "SetGuestAddresses",
                  g_variant_new("(@as)", strv("127.0.0.2", NULL)));
        c2 = client_run(f->exe, f->bus, calls2);
        (void) client_ok(c2, 0);
        (void) client_ok(c2, 1);

        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.checks), ==, 4);
        assert_check(&f->fakes, 0, c1->name, ACTION_PUBLISH, 1, "sandbox", "u-a", "protocol", "tcp",
                     "host_address", "127.0.0.1", "host_port", "0", NULL);
        assert_check(&f->fakes, 1, c1->name, ACTION_PUBLISH, 0, "sandbox", "u-b", "protocol", "tcp",
                     "host_address", "127.0.0.1", "host_port", "0", NULL);
        assert_check(&f->fakes, 2, c2->name, ACTION_PUBLISH, 0, "sandbox", "u-a", NULL);
        assert_check(&f->fakes, 3, c2->name, ACTION_PUBLISH, 1, "sandbox", "u-b", NULL);
}

/* No polkit on the bus: a stranger is denied, saying polkit could not be asked and only root may;
 * root still may. */
static void test_no_polkit(Fixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) calls = calls_new();
        g_autoptr(Client) c = NULL;
        const char *msg;
        guint16 hp;

        g_free(root_publish(f, "r-web", "127.0.0.1", "127.0.0.1", 0, 80, &hp));
        calls_manager(calls, "PublishPorts", publish_args("u-web", "127.0.0.1", "tcp", "", 0, 80));
        calls_manager(calls, "UnpublishPorts",
                      g_variant_new_parsed("(%s, [(%s, %s, %q)])", "r-web", "tcp", "127.0.0.1", hp));
        c = client_run(f->exe, f->bus, calls);
        for (guint i = 0; i < 2; i++) {
                msg = client_error(c, i, ACCESS_DENIED);
                g_test_message("%s", msg);
                g_assert_nonnull(strstr(msg, "polkit could not be asked"));
                g_assert_nonnull(strstr(msg, "only root may"));
        }
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_assert_cmpuint(n_ports(f), ==, 1);

        g_free(root_publish(f, "r-two", "127.0.0.1", "127.0.0.1", 0, 80, NULL));
        g_assert_cmpuint(n_sandboxes(f), ==, 2);
        g_assert_cmpuint(n_ports(f), ==, 2);
}

/* An error from polkit is a no: AccessDenied naming the error, nothing changed. */
static void test_polkit_error(Fixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) calls = calls_new();
        g_autoptr(Client) c = NULL;
        const char *msg;

        polkit_set_rule(&f->fakes, POLKIT_ERROR, NULL);
        calls_manager(calls, "PublishPorts", publish_args("u-web", "127.0.0.1", "tcp", "", 0, 80));
        c = client_run(f->exe, f->bus, calls);
        msg = client_error(c, 0, ACCESS_DENIED);
        g_test_message("%s", msg);
        g_assert_nonnull(strstr(msg, "org.freedesktop.PolicyKit1.Error.Failed"));
        g_assert_nonnull(strstr(msg, "only root may"));
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.checks), ==, 1);
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_cmpuint(n_ports(f), ==, 0);
        sync_signals(f);
        g_assert_cmpuint(f->signals->len, ==, 0);
}

static gboolean polkit_holds_a_check(gpointer data) {
        Fixture *f = data;

        return fakes_count(&f->fakes, f->fakes.held) > 0;
}

/* A polkit that never answers: the stranger's call fails with AccessDenied once the daemon's
 * timeout passed, and meanwhile root's calls and reads are answered promptly. */
static void test_polkit_never_answers(Fixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) calls = calls_new();
        g_autoptr(Client) c = NULL;
        const char *msg;
        gint64 worst = 0;

        polkit_set_rule(&f->fakes, POLKIT_NEVER_ANSWER, NULL);
        g_free(root_publish(f, "r-web", "127.0.0.1", "127.0.0.1", 0, 80, NULL));
        calls_manager(calls, "PublishPorts", publish_args("u-web", "127.0.0.1", "tcp", "", 0, 80));
        c = client_start(f->exe, f->bus, calls);
        /* The fake holds the check: from here the stranger's call waits at polkit. */
        g_assert_true(test_wait_until(polkit_holds_a_check, f, 10000));

        /* Reads and root's changes, a few rounds of them, each promptly answered. */
        for (guint i = 0; i < 5; i++) {
                g_autoptr(GVariant) list = NULL, ports = NULL, removed = NULL;
                g_autofree char *port = NULL;
                gint64 t = g_get_monotonic_time();

                list = root_call(f, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "ListPorts", NULL,
                                 "(a(sssqsqso))");
                ports = g_variant_get_child_value(list, 0);
                g_assert_cmpuint(g_variant_n_children(ports), ==, 1);
                g_assert_cmpuint(n_ports(f), ==, 1);
                port = root_publish(f, "r-two", "127.0.0.1", "127.0.0.1", 0, 80, NULL);
                removed = root_call(f, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "RemoveSandbox",
                                    g_variant_new("(s)", "r-two"), "()");
                worst = MAX(worst, g_get_monotonic_time() - t);
        }
        g_test_message("slowest round of root's calls while polkit waits: %" G_GINT64_FORMAT " us",
                       worst);
        g_assert_cmpint(worst, <, G_USEC_PER_SEC);
        g_assert_false(c->done);

        client_finish(c, 30000);
        msg = client_error(c, 0, ACCESS_DENIED);
        g_test_message("after %" G_GINT64_FORMAT " us: %s", c->finished - c->started, msg);
        g_assert_nonnull(strstr(msg, "polkit could not be asked"));
        g_assert_cmpint(c->finished - c->started, >=, NEVER_TIMEOUT_USEC);
        g_assert_cmpint(c->finished - c->started, <, NEVER_TIMEOUT_USEC + 10 * G_USEC_PER_SEC);
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.checks), ==, 1);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_assert_cmpuint(n_ports(f), ==, 1);
}

static gboolean polkit_got_a_cancel(gpointer data) {
        Fixture *f = data;

        return fakes_count(&f->fakes, f->fakes.cancels) > 0;
}

/* A caller that leaves while its check waits at polkit: the daemon cancels that check at polkit
 * (CancelCheckAuthorization with the check's cancellation id), and nothing changes. */
static void test_polkit_cancelled_when_caller_leaves(Fixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) calls = calls_new();
        g_autoptr(Client) c = NULL;
        g_autoptr(GVariant) check = NULL;
        g_autofree char *cancelled = NULL;
        const char *id;

        polkit_set_rule(&f->fakes, POLKIT_NEVER_ANSWER, NULL);
        calls_manager(calls, "PublishPorts", publish_args("u-web", "127.0.0.1", "tcp", "", 0, 80));
        c = client_start(f->exe, f->bus, calls);
        g_assert_true(test_wait_until(polkit_holds_a_check, f, 10000));
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.cancels), ==, 0);

        g_subprocess_force_exit(c->proc);
        g_assert_true(test_wait_until(client_is_done, c, 10000));
        g_assert_true(g_subprocess_get_if_signaled(c->proc));
        g_assert_true(test_wait_until(polkit_got_a_cancel, f, 10000));
        check = polkit_check_at(&f->fakes, 0);
        g_variant_get_child(check, 4, "&s", &id);
        g_mutex_lock(&f->fakes.lock);
        g_assert_cmpuint(f->fakes.cancels->len, ==, 1);
        cancelled = g_strdup(f->fakes.cancels->pdata[0]);
        g_mutex_unlock(&f->fakes.lock);
        g_assert_cmpstr(cancelled, ==, id);
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_cmpuint(n_ports(f), ==, 0);
        sync_signals(f);
        g_assert_cmpuint(f->signals->len, ==, 0);
}

static gboolean sandbox_removed(gpointer data) {
        return count_signals(data, "SandboxRemoved") > 0;
}

/* Addresses from machined: the first IPv4 and the first IPv6 that is not link-local, Machine is
 * true, traffic reaches the guest there; MachineRemoved removes the sandbox. */
static void test_machined_resolves(Fixture *f, gconstpointer data) {
        static const char *const addrs[] = { "fe80::1", "127.0.0.5", "::1", "127.0.0.6", NULL };
        TestEcho *guest = test_echo_new(IPPROTO_TCP, "127.0.0.5", 0, "m:");
        g_autofree char *port = NULL, *sandbox = NULL, *guests = NULL, *lookup = NULL;
        g_autoptr(GVariant) machine = NULL, guest_address = NULL, removed = NULL, unpublished = NULL;
        const char *id, *path, *reason;
        guint16 hp;
        int fd;

        machined_set_addresses(&f->fakes, addrs);
        port = root_publish(f, "m-web", NULL, "127.0.0.1", 0, test_echo_port(guest), &hp);
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.lookups), ==, 1);
        g_mutex_lock(&f->fakes.lock);
        lookup = g_strdup(f->fakes.lookups->pdata[0]);
        g_mutex_unlock(&f->fakes.lock);
        g_assert_cmpstr(lookup, ==, "m-web");
        guests = guest_addresses(f, "m-web");
        g_assert_cmpstr(guests, ==, "127.0.0.5,::1");
        sandbox = sandbox_path(f, "m-web");
        machine = test_get_property(f->bus, sandbox, TEST_SANDBOX_IFACE, "Machine");
        g_assert_true(g_variant_get_boolean(machine));
        guest_address = test_get_property(f->bus, port, TEST_PORT_IFACE, "GuestAddress");
        g_assert_cmpstr(g_variant_get_string(guest_address, NULL), ==, "127.0.0.5");

        fd = test_tcp_connect("127.0.0.1", hp, 5000);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "hello", "m:hello");
        close(fd);

        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);
        machined_emit_removed(&f->fakes, "m-web");
        g_assert_true(test_wait_until(sandbox_removed, f, 10000));
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "SandboxRemoved"), ==, 1);
        removed = signal_params(f, "SandboxRemoved", 0);
        g_variant_get(removed, "(&s&o)", &id, &path);
        g_assert_cmpstr(id, ==, "m-web");
        g_assert_cmpstr(path, ==, sandbox);
        g_assert_cmpuint(count_signals(f, "PortUnpublished"), ==, 1);
        unpublished = signal_params(f, "PortUnpublished", 0);
        g_variant_get(unpublished, "(&s&s&sq&o&s)", &id, NULL, NULL, NULL, &path, &reason);
        g_assert_cmpstr(id, ==, "m-web");
        g_assert_cmpstr(path, ==, port);
        g_assert_cmpstr(reason, ==, "machine-removed");
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_cmpuint(n_ports(f), ==, 0);
        test_echo_free(guest);
}

/* Publishing sandbox id as root without guest addresses fails with NoGuestAddress; returns the
 * message, after checking that it names the sandbox and that nothing was made. */
static char *expect_no_guest_address(Fixture *f, const char *id) {
        g_autofree char *quoted = g_strdup_printf("'%s'", id);
        char *msg;

        msg = test_call_expect_error(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                                     publish_args(id, NULL, "tcp", "127.0.0.1", 0, 80),
                                     NO_GUEST_ADDRESS);
        g_test_message("%s", msg);
        g_assert_nonnull(strstr(msg, quoted));
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_cmpuint(n_ports(f), ==, 0);
        return msg;
}

/* Asserts that msg says what it should and none of what the other cases say. */
static void assert_only_phrase(const char *msg, const char *phrase) {
        static const char *const phrases[] = { MSG_MACHINED_ABSENT, MSG_NO_SUCH_MACHINE,
                                               MSG_NO_ADDRESS };

        for (guint i = 0; i < G_N_ELEMENTS(phrases); i++)
                if (strcmp(phrases[i], phrase) == 0)
                        g_assert_nonnull(strstr(msg, phrases[i]));
                else
                        g_assert_null(strstr(msg, phrases[i]));
}

static void test_machined_unknown_machine(Fixture *f, gconstpointer data) {
        g_autofree char *msg = NULL;

        machined_set_rule(&f->fakes, MACHINED_NO_SUCH_MACHINE);
        msg = expect_no_guest_address(f, "m-gone");
        assert_only_phrase(msg, MSG_NO_SUCH_MACHINE);
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.lookups), ==, 1);
}

static void test_machined_absent(Fixture *f, gconstpointer data) {
        g_autofree char *msg = expect_no_guest_address(f, "m-none");

        assert_only_phrase(msg, MSG_MACHINED_ABSENT);
}

/* No address at all, or a link-local IPv6 alone: nothing usable. */
static void test_machined_no_address(Fixture *f, gconstpointer data) {
        static const char *const link_local[] = { "fe80::1", NULL };
        g_autofree char *msg1 = NULL, *msg2 = NULL;

        machined_set_addresses(&f->fakes, NULL);
        msg1 = expect_no_guest_address(f, "m-empty");
        assert_only_phrase(msg1, MSG_NO_ADDRESS);
        machined_set_addresses(&f->fakes, link_local);
        msg2 = expect_no_guest_address(f, "m-link");
        assert_only_phrase(msg2, MSG_NO_ADDRESS);
        g_assert_cmpuint(fakes_count(&f->fakes, f->fakes.lookups), ==, 2);
}

/* MachineRemoved for a sandbox whose addresses were given, or for no sandbox, changes nothing:
 * the one that follows it, for a machine-bound sandbox, shows it was processed. */
static void test_machine_removed_ignores_others(Fixture *f, gconstpointer data) {
        static const char *const addrs[] = { "127.0.0.5", NULL };
        g_autofree char *given_port = NULL, *given = NULL, *real_port = NULL, *guests = NULL;
        g_autoptr(GVariant) machine = NULL, unpublished = NULL, removed = NULL;
        const char *id, *path;

        machined_set_addresses(&f->fakes, addrs);
        given_port = root_publish(f, "given", "127.0.0.1", "127.0.0.1", 0, 80, NULL);
        given = sandbox_path(f, "given");
        machine = test_get_property(f->bus, given, TEST_SANDBOX_IFACE, "Machine");
        g_assert_false(g_variant_get_boolean(machine));
        real_port = root_publish(f, "m-real", NULL, "127.0.0.1", 0, 80, NULL);
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);

        machined_emit_removed(&f->fakes, "given");
        machined_emit_removed(&f->fakes, "no-such-sandbox");
        machined_emit_removed(&f->fakes, "m-real");
        g_assert_true(test_wait_until(sandbox_removed, f, 10000));
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "SandboxRemoved"), ==, 1);
        removed = signal_params(f, "SandboxRemoved", 0);
        g_variant_get(removed, "(&s&o)", &id, NULL);
        g_assert_cmpstr(id, ==, "m-real");
        g_assert_cmpuint(count_signals(f, "PortUnpublished"), ==, 1);
        unpublished = signal_params(f, "PortUnpublished", 0);
        g_variant_get(unpublished, "(&s&s&sq&o&s)", &id, NULL, NULL, NULL, &path, NULL);
        g_assert_cmpstr(path, ==, real_port);

        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_assert_cmpuint(n_ports(f), ==, 1);
        g_assert_cmpuint(n_sandbox_ports(f, "given"), ==, 1);
        guests = guest_addresses(f, "given");
        g_assert_cmpstr(guests, ==, "127.0.0.1");
}

typedef struct Unpublished {
        Fixture *f;
        guint n;
} Unpublished;

static gboolean unpublished_reached(gpointer data) {
        Unpublished *u = data;

        return count_signals(u->f, "PortUnpublished") >= u->n;
}

static char *conn_publish(GDBusConnection *conn, const char *sandbox, const char *proto,
                          gboolean bind_to_caller) {
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        char *path;

        reply = g_dbus_connection_call_sync(
                conn, TEST_BUS_NAME, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                g_variant_new_parsed(
                        "(%s, @as [], [(%s, '127.0.0.1', @q 0, @q 80)], {'BindToCaller': <%b>})",
                        sandbox, proto, bind_to_caller),
                G_VARIANT_TYPE("(oa(ssqqo))"), G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        g_assert_no_error(error);
        (void) published_port(reply, 0, &path);
        return path;
}

static gboolean strv_has(GVariant *ao, const char *path) {
        g_autofree const char **v = g_variant_get_objv(ao, NULL);

        return g_strv_contains(v, path);
}

/* Closing the connection that published ports with BindToCaller removes exactly those
 * (caller-vanished); its other ports, its sandbox and other sandboxes stay. */
static void test_bind_to_caller(Fixture *f, gconstpointer data) {
        g_autoptr(GDBusConnection) conn = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *b0 = NULL, *keep0 = NULL, *b1 = NULL, *b2 = NULL, *keep1 = NULL, *b = NULL,
                        *keep = NULL;
        g_autoptr(GVariant) b_ports = NULL, keep_ports = NULL;
        Unpublished u = { f, 2 };

        b0 = root_publish(f, "b", "127.0.0.1", "127.0.0.1", 0, 80, NULL);
        keep0 = root_publish(f, "keep", "127.0.0.1", "127.0.0.1", 0, 80, NULL);
        conn = g_dbus_connection_new_for_address_sync(
                f->bus->address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        g_assert_no_error(error);
        g_dbus_connection_set_exit_on_close(conn, FALSE);
        b1 = conn_publish(conn, "b", "tcp", TRUE);
        b2 = conn_publish(conn, "b", "udp", TRUE);
        keep1 = conn_publish(conn, "keep", "tcp", FALSE);
        g_assert_cmpuint(n_ports(f), ==, 5);
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);

        g_assert_true(g_dbus_connection_close_sync(conn, NULL, &error));
        g_assert_no_error(error);
        g_assert_true(test_wait_until(unpublished_reached, &u, 10000));
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "PortUnpublished"), ==, 2);
        for (guint i = 0; i < 2; i++) {
                g_autoptr(GVariant) s = signal_params(f, "PortUnpublished", i);
                const char *id, *path, *reason;

                g_variant_get(s, "(&s&s&sq&o&s)", &id, NULL, NULL, NULL, &path, &reason);
                g_assert_cmpstr(id, ==, "b");
                g_assert_true(strcmp(path, b1) == 0 || strcmp(path, b2) == 0);
                g_assert_cmpstr(reason, ==, "caller-vanished");
        }
        g_assert_cmpuint(count_signals(f, "SandboxRemoved"), ==, 0);

        g_assert_cmpuint(n_sandboxes(f), ==, 2);
        g_assert_cmpuint(n_ports(f), ==, 3);
        b = sandbox_path(f, "b");
        keep = sandbox_path(f, "keep");
        b_ports = test_get_property(f->bus, b, TEST_SANDBOX_IFACE, "Ports");
        g_assert_cmpuint(g_variant_n_children(b_ports), ==, 1);
        g_assert_true(strv_has(b_ports, b0));
        keep_ports = test_get_property(f->bus, keep, TEST_SANDBOX_IFACE, "Ports");
        g_assert_cmpuint(g_variant_n_children(keep_ports), ==, 2);
        g_assert_true(strv_has(keep_ports, keep0));
        g_assert_true(strv_has(keep_ports, keep1));
}

static const Config with_polkit = { .polkit = TRUE };
static const Config with_machined = { .machined = TRUE };
static const Config with_nothing = { 0 };

static void skip_not_root(gconstpointer data) {
        g_test_skip("needs root: a client runs as another uid");
}

#define ADD(name, cfg, fn)                                                                         \
        do {                                                                                       \
                if (geteuid() == 0)                                                                \
                        g_test_add("/trust/" name, Fixture, &(cfg), fixture_setup, fn,             \
                                   fixture_teardown);                                              \
                else                                                                               \
                        g_test_add_data_func("/trust/" name, NULL, skip_not_root);                 \
        } while (0)

/* Guest addresses given to PublishPorts end the sandbox's machine binding, as
 * SetGuestAddresses does. */
static void test_given_addresses_end_machine(Fixture *f, gconstpointer data) {
        static const char *const addrs[] = { "127.0.0.5", NULL };
        g_autofree char *p1 = NULL, *p2 = NULL, *sandbox = NULL, *guests = NULL;
        g_autoptr(GVariant) before = NULL, after = NULL;
        guint16 hp;

        machined_set_addresses(&f->fakes, addrs);
        p1 = root_publish(f, "m-web", NULL, "127.0.0.1", 0, 80, &hp);
        sandbox = sandbox_path(f, "m-web");
        before = test_get_property(f->bus, sandbox, TEST_SANDBOX_IFACE, "Machine");
        g_assert_true(g_variant_get_boolean(before));
        p2 = root_publish(f, "m-web", "127.0.0.7", "127.0.0.1", 0, 81, &hp);
        after = test_get_property(f->bus, sandbox, TEST_SANDBOX_IFACE, "Machine");
        g_assert_false(g_variant_get_boolean(after));
        guests = guest_addresses(f, "m-web");
        g_assert_cmpstr(guests, ==, "127.0.0.7");
        /* No longer the machine's: its MachineRemoved changes nothing. */
        machined_emit_removed(&f->fakes, "m-web");
        sync_signals(f);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
}

/* After a crash, a machine-bound sandbox comes back only while machined still knows its
 * machine; one whose machine went away meanwhile is removed (machine-removed). */
static gboolean one_sandbox_left(gpointer data) {
        return n_sandboxes(data) == 1;
}

static void test_machine_gone_while_down(Fixture *f, gconstpointer data) {
        static const char *const addrs[] = { "127.0.0.5", NULL };
        g_autofree char *dir = NULL, *state = NULL, *arg = NULL, *keep = NULL, *sandbox = NULL;
        g_autofree char *p1 = NULL, *p2 = NULL, *msg = NULL;
        g_autoptr(GVariant) machine = NULL;
        g_autoptr(GError) error = NULL;
        const char *args[] = { NULL, NULL };
        guint16 hp;

        dir = g_dir_make_tmp("portpub-trust-XXXXXX", &error);
        g_assert_no_error(error);
        state = g_build_filename(dir, "state", NULL);
        arg = g_strdup_printf("--state-file=%s", state);
        args[0] = arg;
        /* A daemon of this test's own, on a state file that outlives it. */
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        f->daemon = test_daemon_spawn(f->bus, args, FALSE);
        g_assert_true(test_daemon_wait_for_name(f->daemon, 10000));

        machined_set_addresses(&f->fakes, addrs);
        p1 = root_publish(f, "m-keep", NULL, "127.0.0.1", 0, 80, &hp);
        p2 = root_publish(f, "m-gone", NULL, "127.0.0.1", 0, 80, &hp);
        g_assert_cmpuint(n_sandboxes(f), ==, 2);

        g_assert_cmpint(kill(f->daemon->pid, SIGKILL), ==, 0);
        g_assert_true(test_daemon_wait(f->daemon, 5000));
        test_daemon_free(f->daemon);
        machined_forget(&f->fakes, "m-gone");
        f->daemon = test_daemon_spawn(f->bus, args, FALSE);
        g_assert_true(test_daemon_wait_for_name(f->daemon, 10000));

        g_assert_true(test_wait_until(one_sandbox_left, f, 10000));
        msg = test_call_expect_error(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "GetSandbox",
                                     g_variant_new("(s)", "m-gone"),
                                     "io.portpub.Publisher1.Error.NoSuchSandbox");
        sandbox = sandbox_path(f, "m-keep");
        machine = test_get_property(f->bus, sandbox, TEST_SANDBOX_IFACE, "Machine");
        g_assert_true(g_variant_get_boolean(machine));
        keep = guest_addresses(f, "m-keep");
        g_assert_cmpstr(keep, ==, "127.0.0.5");
        g_assert_cmpuint(n_ports(f), ==, 1);

        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        (void) unlink(state);
        (void) rmdir(dir);
        f->daemon = test_daemon_start(f->bus);
}

int main(int argc, char *argv[]) {
        if (argc >= 2 && strcmp(argv[1], "--client") == 0)
                return client_main(argc - 2, argv + 2);

        /* Every daemon of these tests gives up on a silent polkit after NEVER_TIMEOUT_USEC, not
         * 25 s; set while no other thread exists, as setenv() must be. */
        {
                g_autofree char *v =
                        g_strdup_printf("%" G_GINT64_FORMAT, (gint64) NEVER_TIMEOUT_USEC);

                g_setenv("PORTPUB_TEST_POLKIT_TIMEOUT_USEC", v, TRUE);
        }
        g_test_init(&argc, &argv, NULL);
        ADD("polkit-allowed", with_polkit, test_polkit_allowed);
        ADD("polkit-denied", with_polkit, test_polkit_denied);
        ADD("owner-only", with_polkit, test_owner_only);
        ADD("manage-all", with_polkit, test_manage_all);
        ADD("privileged-port", with_polkit, test_privileged_port);
        ADD("interactive-flag", with_polkit, test_interactive_flag);
        ADD("no-polkit", with_nothing, test_no_polkit);
        ADD("polkit-error", with_polkit, test_polkit_error);
        ADD("polkit-never-answers", with_polkit, test_polkit_never_answers);
        ADD("polkit-cancelled-when-caller-leaves", with_polkit,
            test_polkit_cancelled_when_caller_leaves);
        ADD("machined-resolves", with_machined, test_machined_resolves);
        ADD("machined-unknown-machine", with_machined, test_machined_unknown_machine);
        ADD("machined-absent", with_nothing, test_machined_absent);
        ADD("machined-no-address", with_machined, test_machined_no_address);
        ADD("machine-removed-ignores-others", with_machined, test_machine_removed_ignores_others);
        ADD("machine-gone-while-down", with_machined, test_machine_gone_while_down);
        ADD("given-addresses-end-machine", with_machined, test_given_addresses_end_machine);
        ADD("bind-to-caller", with_polkit, test_bind_to_caller);
        return g_test_run();
}
