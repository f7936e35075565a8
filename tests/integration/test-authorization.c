/* Who may change what over D-Bus: on a --bus-address= bus only root, on a user bus everyone */

/*
 * The clients run as other processes of this same binary ("--client", below), on a bus of our own
 * that every uid may use (test_bus_new_shared()). A client that must be someone else is switched
 * to uid 65534 between fork and exec by g_spawn's child_setup, so it is a fresh process with its
 * own GDBus connection: GDBus in a forked child of a threaded GLib process is not safe.
 *
 * A client makes the calls named on its command line, in order, and prints one line for each:
 * "NAME ok REPLY" or "NAME error ERROR-NAME MESSAGE". The test reads those lines and asserts.
 */

#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define STRANGER_UID 65534
#define STRANGER_GID 65534
#define VICTIM "victim"
#define VICTIM_PATH TEST_MANAGER_PATH "/sandbox/" VICTIM
#define INTRUDER "intruder"
#define INTRUDER_PATH TEST_MANAGER_PATH "/sandbox/" INTRUDER
#define ACCESS_DENIED "org.freedesktop.DBus.Error.AccessDenied"
#define PROPERTIES_IFACE "org.freedesktop.DBus.Properties"
#define CLIENT_TIMEOUT_MS 60000

/* The victim's objects, as a client is told them on its command line. */
typedef struct Target {
        const char *port_path;
        guint16 host_port;
        guint16 guest_port; /* where the ports a client publishes go */
} Target;

typedef enum CallObject { ON_MANAGER, ON_SANDBOX, ON_PORT } CallObject;

typedef struct ClientCall {
        const char *name;
        CallObject object;
        const char *iface;
        const char *method;
        GVariant *(*params)(const Target *t);
        /* As root on a fresh victim (one sandbox, one port), what is there afterwards. */
        guint32 sandboxes_after, ports_after;
        const char *guest_after; /* the victim's port's GuestAddress afterwards, NULL: not checked */
} ClientCall;

static GVariant *params_publish_own(const Target *t) {
        return g_variant_new_parsed("(%s, ['127.0.0.1'], [('tcp', '127.0.0.1', @q 0, %q)], @a{sv} {})",
                                    INTRUDER, t->guest_port);
}

static GVariant *params_publish_victim(const Target *t) {
        return g_variant_new_parsed("(%s, @as [], [('tcp', '127.0.0.1', @q 0, %q)], @a{sv} {})",
                                    VICTIM, t->guest_port);
}

static GVariant *params_unpublish_victim(const Target *t) {
        return g_variant_new_parsed("(%s, [('tcp', '127.0.0.1', %q)])", VICTIM, t->host_port);
}

static GVariant *params_victim(const Target *t) {
        return g_variant_new("(s)", VICTIM);
}

static GVariant *params_intruder(const Target *t) {
        return g_variant_new("(s)", INTRUDER);
}

static GVariant *params_set_guest_victim(const Target *t) {
        return g_variant_new_parsed("(%s, ['127.0.0.2'])", VICTIM);
}

static GVariant *params_sandbox_publish(const Target *t) {
        return g_variant_new_parsed("([('tcp', '127.0.0.1', @q 0, %q)], @a{sv} {})", t->guest_port);
}

static GVariant *params_sandbox_unpublish(const Target *t) {
        return g_variant_new_parsed("([('tcp', '127.0.0.1', %q)],)", t->host_port);
}

static GVariant *params_sandbox_set_guest(const Target *t) {
        return g_variant_new_parsed("(['127.0.0.2'],)");
}

static GVariant *params_none(const Target *t) {
        return NULL;
}

static GVariant *params_getall_manager(const Target *t) {
        return g_variant_new("(s)", TEST_MANAGER_IFACE);
}

static GVariant *params_getall_sandbox(const Target *t) {
        return g_variant_new("(s)", TEST_SANDBOX_IFACE);
}

static GVariant *params_getall_port(const Target *t) {
        return g_variant_new("(s)", TEST_PORT_IFACE);
}

/* Every mutating method of the three interfaces, each aimed at the victim (but the first, which
 * makes a sandbox of the caller's own). */
static const ClientCall mutating_calls[] = {
        { "manager-publish-own", ON_MANAGER, TEST_MANAGER_IFACE, "PublishPorts", params_publish_own,
          2, 2, "127.0.0.1" },
        { "manager-publish-victim", ON_MANAGER, TEST_MANAGER_IFACE, "PublishPorts",
          params_publish_victim, 1, 2, "127.0.0.1" },
        { "manager-unpublish", ON_MANAGER, TEST_MANAGER_IFACE, "UnpublishPorts",
          params_unpublish_victim, 1, 0, NULL },
        { "manager-remove-sandbox", ON_MANAGER, TEST_MANAGER_IFACE, "RemoveSandbox", params_victim,
          0, 0, NULL },
        { "manager-set-guest-addresses", ON_MANAGER, TEST_MANAGER_IFACE, "SetGuestAddresses",
          params_set_guest_victim, 1, 1, "127.0.0.2" },
        { "sandbox-publish", ON_SANDBOX, TEST_SANDBOX_IFACE, "PublishPorts", params_sandbox_publish,
          1, 2, "127.0.0.1" },
        { "sandbox-unpublish", ON_SANDBOX, TEST_SANDBOX_IFACE, "UnpublishPorts",
          params_sandbox_unpublish, 1, 0, NULL },
        { "sandbox-set-guest-addresses", ON_SANDBOX, TEST_SANDBOX_IFACE, "SetGuestAddresses",
          params_sandbox_set_guest, 1, 1, "127.0.0.2" },
        { "sandbox-remove", ON_SANDBOX, TEST_SANDBOX_IFACE, "Remove", params_none, 0, 0, NULL },
        { "port-unpublish", ON_PORT, TEST_PORT_IFACE, "Unpublish", params_none, 1, 0, NULL },
};

static const ClientCall read_calls[] = {
        { "manager-list-ports", ON_MANAGER, TEST_MANAGER_IFACE, "ListPorts", params_none },
        { "manager-list-sandboxes", ON_MANAGER, TEST_MANAGER_IFACE, "ListSandboxes", params_none },
        { "manager-getall", ON_MANAGER, PROPERTIES_IFACE, "GetAll", params_getall_manager },
        { "sandbox-getall", ON_SANDBOX, PROPERTIES_IFACE, "GetAll", params_getall_sandbox },
        { "port-getall", ON_PORT, PROPERTIES_IFACE, "GetAll", params_getall_port },
};

/* The client's own sandbox, removed again (for the user bus, where it may). */
static const ClientCall remove_own_call = { "manager-remove-own", ON_MANAGER, TEST_MANAGER_IFACE,
                                            "RemoveSandbox", params_intruder };

static const ClientCall *find_call(const char *name) {
        for (size_t i = 0; i < G_N_ELEMENTS(mutating_calls); i++)
                if (strcmp(mutating_calls[i].name, name) == 0)
                        return &mutating_calls[i];
        for (size_t i = 0; i < G_N_ELEMENTS(read_calls); i++)
                if (strcmp(read_calls[i].name, name) == 0)
                        return &read_calls[i];
        if (strcmp(remove_own_call.name, name) == 0)
                return &remove_own_call;
        return NULL;
}

static const char *call_path(const ClientCall *c, const Target *t) {
        switch (c->object) {
        case ON_SANDBOX:
                return VICTIM_PATH;
        case ON_PORT:
                return t->port_path;
        default:
                return TEST_MANAGER_PATH;
        }
}

/* ---- the client process ---------------------------------------------------------------------- */

static void print_one_line(const char *s) {
        for (const char *c = s; *c; c++)
                putchar(*c == '\n' ? ' ' : *c);
        putchar('\n');
}

/* argv: PROGRAM --client ADDRESS PORT_PATH HOST_PORT GUEST_PORT CALL... */
static int client_main(int argc, char *argv[]) {
        g_autoptr(GDBusConnection) conn = NULL;
        g_autoptr(GError) error = NULL;
        Target t;

        if (argc < 7) {
                g_printerr("usage: %s --client ADDRESS PORT_PATH HOST_PORT GUEST_PORT CALL...\n",
                           argv[0]);
                return 2;
        }
        t = (Target){ .port_path = argv[3],
                      .host_port = (guint16) strtoul(argv[4], NULL, 10),
                      .guest_port = (guint16) strtoul(argv[5], NULL, 10) };
        /* Who the kernel says we are: the test checks that the switch happened. */
        printf("whoami %u %u %d\n", (unsigned) getuid(), (unsigned) getgid(), getgroups(0, NULL));

        conn = g_dbus_connection_new_for_address_sync(
                argv[2],
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!conn) {
                g_printerr("client: cannot connect to %s: %s\n", argv[2], error->message);
                return 1;
        }
        for (int i = 6; i < argc; i++) {
                const ClientCall *c = find_call(argv[i]);
                g_autoptr(GVariant) reply = NULL;
                g_autoptr(GError) call_error = NULL;
                g_autofree char *text = NULL, *remote = NULL;

                if (!c) {
                        g_printerr("client: unknown call '%s'\n", argv[i]);
                        return 2;
                }
                reply = g_dbus_connection_call_sync(conn, TEST_BUS_NAME, call_path(c, &t), c->iface,
                                                    c->method, c->params(&t), NULL,
                                                    G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &call_error);
                if (reply) {
                        text = g_variant_print(reply, TRUE);
                        printf("%s ok ", c->name);
                } else {
                        remote = g_dbus_error_get_remote_error(call_error);
                        g_dbus_error_strip_remote_error(call_error);
                        text = g_strdup(call_error->message);
                        printf("%s error %s ", c->name, remote ? remote : "(not-remote)");
                }
                print_one_line(text);
        }
        if (fflush(stdout) != 0)
                return 1;
        (void) g_dbus_connection_close_sync(conn, NULL, NULL);
        return 0;
}

/* ---- the test side ---------------------------------------------------------------------------- */

#define SETUP_FAILED 126 /* the client's exit status when it could not become the stranger */

/* Between fork and exec, in the child: only async-signal-safe calls. */
static void become_stranger(gpointer data) {
        const gid_t gid = STRANGER_GID;
        const uid_t uid = STRANGER_UID;

        if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
                _exit(SETUP_FAILED);
        /* After the switch: changing credentials clears the parent-death signal. */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void stay_root(gpointer data) {
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

typedef struct ClientRun {
        GHashTable *results; /* call name -> "ok REPLY" or "error NAME MESSAGE"; "whoami" too */
        gboolean setup_failed;
} ClientRun;

static void client_run_clear(ClientRun *run) {
        g_clear_pointer(&run->results, g_hash_table_unref);
}

/* Runs the client with calls (NULL-terminated) against t, as uid 65534 or as root. */
static void run_client(TestBus *b, const Target *t, gboolean as_stranger, const char *const *calls,
                       ClientRun *ret) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GString) out = g_string_new(NULL);
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) lines = NULL;
        g_autofree char *self = NULL;
        gint64 deadline = g_get_monotonic_time() + (gint64) CLIENT_TIMEOUT_MS * 1000;
        GPid pid;
        int fd, status;

        *ret = (ClientRun){ .results =
                                    g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free) };
        self = g_file_read_link("/proc/self/exe", &error);
        g_assert_no_error(error);
        g_ptr_array_add(argv, g_strdup(self));
        g_ptr_array_add(argv, g_strdup("--client"));
        g_ptr_array_add(argv, g_strdup(b->address));
        g_ptr_array_add(argv, g_strdup(t->port_path));
        g_ptr_array_add(argv, g_strdup_printf("%u", t->host_port));
        g_ptr_array_add(argv, g_strdup_printf("%u", t->guest_port));
        for (const char *const *c = calls; *c; c++)
                g_ptr_array_add(argv, g_strdup(*c));
        g_ptr_array_add(argv, NULL);

        g_spawn_async_with_pipes(NULL, (char **) argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                 as_stranger ? become_stranger : stay_root, NULL, &pid, NULL, &fd,
                                 NULL, &error);
        g_assert_no_error(error);

        for (;;) {
                gint64 left = deadline - g_get_monotonic_time();
                struct pollfd p = { .fd = fd, .events = POLLIN };
                char buf[4096];
                ssize_t n;

                if (left <= 0 || poll(&p, 1, (int) (left / 1000) + 1) <= 0) {
                        kill(pid, SIGKILL);
                        (void) test_wait_pid(pid, 5000, &status);
                        g_error("the client did not finish within %u ms; it said: %s",
                                CLIENT_TIMEOUT_MS, out->str);
                }
                n = read(fd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                g_assert_cmpint(n, >=, 0);
                if (n == 0)
                        break;
                g_string_append_len(out, buf, n);
        }
        close(fd);
        g_assert_true(test_wait_pid(pid, 10000, &status));
        g_spawn_close_pid(pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == SETUP_FAILED) {
                ret->setup_failed = TRUE;
                return;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                g_error("the client failed (status 0x%x); it said: %s", status, out->str);

        lines = g_strsplit(out->str, "\n", -1);
        for (char **l = lines; *l; l++) {
                const char *sp = strchr(*l, ' ');

                if (!sp)
                        continue;
                g_hash_table_replace(ret->results, g_strndup(*l, (gsize) (sp - *l)),
                                     g_strdup(sp + 1));
        }
        for (const char *const *c = calls; *c; c++)
                if (!g_hash_table_contains(ret->results, *c))
                        g_error("the client said nothing about '%s': %s", *c, out->str);
}

/* Skips the test unless a client can run as uid 65534 here; TRUE when it can. */
static gboolean stranger_possible(void) {
        if (geteuid() != 0) {
                g_test_skip("needs root: a client of this test runs as uid 65534");
                return FALSE;
        }
        return TRUE;
}

static const char *result_of(const ClientRun *run, const char *call) {
        const char *r = g_hash_table_lookup(run->results, call);

        g_assert_nonnull(r);
        return r;
}

static void assert_ok(const ClientRun *run, const char *call) {
        const char *r = result_of(run, call);

        if (!g_str_has_prefix(r, "ok "))
                g_error("%s: expected success, got %s", call, r);
}

/* "whoami UID GID NGROUPS": the stranger has no supplementary groups left. */
static void assert_ran_as(const ClientRun *run, unsigned uid) {
        g_autofree char *prefix = g_strdup_printf("%u %u ", uid, uid);
        const char *r = result_of(run, "whoami");

        g_assert_true(g_str_has_prefix(r, prefix));
        if (uid != 0)
                g_assert_cmpstr(r + strlen(prefix), ==, "0");
}

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
        GPtrArray *signals; /* member names of the daemon's signals, in order */
        guint subscription;
        TestEcho *guest;
        Target victim;
        char *victim_port_path;
} Fixture;

static void on_signal(GDBusConnection *conn, const char *sender, const char *path,
                      const char *iface, const char *member, GVariant *params, gpointer data) {
        Fixture *f = data;

        g_ptr_array_add(f->signals, g_strdup(member));
}

static void fixture_setup(Fixture *f, gconstpointer data) {
        const TestDaemonOptions *o = data;

        f->bus = test_bus_new_shared();
        f->daemon = test_daemon_start_full(f->bus, o);
        f->signals = g_ptr_array_new_with_free_func(g_free);
        /* Only the daemon's signals: the bus's own NameOwnerChanged for every client that comes
         * and goes is not what the test is about. */
        f->subscription = g_dbus_connection_signal_subscribe(f->bus->conn, TEST_BUS_NAME, NULL, NULL,
                                                             NULL, NULL, G_DBUS_SIGNAL_FLAGS_NONE,
                                                             on_signal, f, NULL);
        f->guest = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "guest:");
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_dbus_connection_signal_unsubscribe(f->bus->conn, f->subscription);
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        test_echo_free(f->guest);
        g_ptr_array_free(f->signals, TRUE);
        g_free(f->victim_port_path);
        test_bus_free(f->bus);
}

/* The daemon's signals sent before its reply to a Ping reach us before that reply. */
static void sync_signals(Fixture *f) {
        test_sync_daemon(f->bus);
}

static guint count_signals(Fixture *f, const char *member) {
        guint n = 0;

        for (guint i = 0; i < f->signals->len; i++)
                n += strcmp(f->signals->pdata[i], member) == 0;
        return n;
}

static guint32 n_ports(Fixture *f) {
        return test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts");
}

static guint32 n_sandboxes(Fixture *f) {
        return test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes");
}

/* As root: the victim, one TCP port on 127.0.0.1 (the kernel picks it) to the echo guest. */
static void publish_victim(Fixture *f) {
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        const char *path;
        guint16 port;

        reply = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                          g_variant_new_parsed("(%s, ['127.0.0.1'], [('tcp', '127.0.0.1', @q 0, %q)], "
                                               "@a{sv} {})",
                                               VICTIM, test_echo_port(f->guest)),
                          "(oa(ssqqo))", &error);
        g_assert_no_error(error);
        g_autoptr(GVariant) published = g_variant_get_child_value(reply, 1);
        g_assert_cmpuint(g_variant_n_children(published), ==, 1);
        g_variant_get_child(published, 0, "(&s&sqq&o)", NULL, NULL, &port, NULL, &path);
        g_free(f->victim_port_path);
        f->victim_port_path = g_strdup(path);
        f->victim = (Target){ .port_path = f->victim_port_path,
                              .host_port = port,
                              .guest_port = test_echo_port(f->guest) };
}

/* As root: every sandbox goes. */
static void remove_all(Fixture *f) {
        g_autoptr(GVariant) list = NULL, sandboxes = NULL;
        GVariantIter iter;
        const char *id;

        list = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "ListSandboxes", NULL,
                         "(a(sou))", NULL);
        g_assert_nonnull(list);
        sandboxes = g_variant_get_child_value(list, 0);
        g_variant_iter_init(&iter, sandboxes);
        while (g_variant_iter_next(&iter, "(&s&ou)", &id, NULL, NULL)) {
                g_autoptr(GVariant) r = NULL;
                g_autoptr(GError) error = NULL;

                r = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "RemoveSandbox",
                              g_variant_new("(s)", id), "()", &error);
                g_assert_no_error(error);
        }
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
}

static char *port_guest_address(Fixture *f, const char *port_path) {
        g_autoptr(GVariant) v = test_get_property(f->bus, port_path, TEST_PORT_IFACE, "GuestAddress");

        return g_variant_dup_string(v, NULL);
}

/* Bytes sent to host_port on 127.0.0.1 come back from the echo guest. */
static void assert_relays(guint16 host_port) {
        int fd = test_tcp_connect("127.0.0.1", host_port, 5000);

        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "still here", "guest:still here");
        close(fd);
}

/* uid 65534 calls every mutating method and each is refused with AccessDenied saying that root is
 * needed; it may read everything; afterwards nothing changed, nothing was announced, and the
 * victim's port still relays. */
static void test_stranger_denied(Fixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) calls = g_ptr_array_new();
        g_autofree char *guest = NULL;
        ClientRun run;

        if (!stranger_possible())
                return;
        publish_victim(f);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_assert_cmpuint(n_ports(f), ==, 1);
        for (size_t i = 0; i < G_N_ELEMENTS(mutating_calls); i++)
                g_ptr_array_add(calls, (gpointer) mutating_calls[i].name);
        for (size_t i = 0; i < G_N_ELEMENTS(read_calls); i++)
                g_ptr_array_add(calls, (gpointer) read_calls[i].name);
        g_ptr_array_add(calls, NULL);
        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);

        run_client(f->bus, &f->victim, TRUE, (const char *const *) calls->pdata, &run);
        if (run.setup_failed) {
                g_test_skip("cannot switch a child process to uid 65534 here");
                client_run_clear(&run);
                return;
        }
        assert_ran_as(&run, STRANGER_UID);
        for (size_t i = 0; i < G_N_ELEMENTS(mutating_calls); i++) {
                const char *name = mutating_calls[i].name, *r = result_of(&run, name);

                g_test_message("%s: %s", name, r);
                if (!g_str_has_prefix(r, "error " ACCESS_DENIED " "))
                        g_error("%s as uid %u: expected %s, got %s", name, STRANGER_UID,
                                ACCESS_DENIED, r);
                if (!strstr(r + strlen("error " ACCESS_DENIED " "), "root"))
                        g_error("%s: the message does not say that root is needed: %s", name, r);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(read_calls); i++)
                assert_ok(&run, read_calls[i].name);
        /* The reads saw the victim. */
        g_assert_nonnull(strstr(result_of(&run, "manager-list-ports"), f->victim.port_path));
        g_assert_nonnull(strstr(result_of(&run, "manager-list-sandboxes"), "'" VICTIM "'"));
        g_assert_nonnull(strstr(result_of(&run, "sandbox-getall"), "'Id': <'" VICTIM "'>"));
        g_assert_nonnull(strstr(result_of(&run, "port-getall"), "'Sandbox': <'" VICTIM "'>"));
        g_assert_nonnull(strstr(result_of(&run, "manager-getall"), "'NPorts': <uint32 1>"));
        client_run_clear(&run);

        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "PortUnpublished"), ==, 0);
        g_assert_cmpuint(count_signals(f, "SandboxRemoved"), ==, 0);
        g_assert_cmpuint(count_signals(f, "SandboxNew"), ==, 0);
        g_assert_cmpuint(count_signals(f, "PortPublished"), ==, 0);
        /* Nor anything else: no InterfacesAdded/Removed, no PropertiesChanged. */
        g_assert_cmpuint(f->signals->len, ==, 0);
        g_assert_cmpuint(n_sandboxes(f), ==, 1);
        g_assert_cmpuint(n_ports(f), ==, 1);
        guest = port_guest_address(f, f->victim.port_path);
        g_assert_cmpstr(guest, ==, "127.0.0.1");
        assert_relays(f->victim.host_port);
}

/* Root makes the same calls, each on a fresh victim, and each succeeds and does what it says:
 * the rule is "root only", not "no one". */
static void test_root_allowed(Fixture *f, gconstpointer data) {
        for (size_t i = 0; i < G_N_ELEMENTS(mutating_calls); i++) {
                const ClientCall *c = &mutating_calls[i];
                const char *calls[] = { c->name, NULL };
                ClientRun run;

                publish_victim(f);
                run_client(f->bus, &f->victim, FALSE, calls, &run);
                g_assert_false(run.setup_failed);
                assert_ran_as(&run, 0);
                g_test_message("%s: %s", c->name, result_of(&run, c->name));
                assert_ok(&run, c->name);
                client_run_clear(&run);
                g_assert_cmpuint(n_sandboxes(f), ==, c->sandboxes_after);
                g_assert_cmpuint(n_ports(f), ==, c->ports_after);
                if (c->guest_after) {
                        g_autofree char *guest = port_guest_address(f, f->victim.port_path);

                        g_assert_cmpstr(guest, ==, c->guest_after);
                }
                remove_all(f);
        }
}

/* On a user bus (--user) the same uid 65534 may publish, remove its own sandbox, and remove
 * root's too: every call on that bus is the user's own. */
static void test_user_bus_allows_all(Fixture *f, gconstpointer data) {
        const char *publish[] = { "manager-publish-own", NULL };
        const char *remove[] = { "manager-remove-own", "manager-remove-sandbox", NULL };
        g_autoptr(GVariant) ports = NULL, first = NULL;
        ClientRun run;
        guint16 port;

        if (!stranger_possible())
                return;
        publish_victim(f);
        run_client(f->bus, &f->victim, TRUE, publish, &run);
        if (run.setup_failed) {
                g_test_skip("cannot switch a child process to uid 65534 here");
                client_run_clear(&run);
                return;
        }
        assert_ran_as(&run, STRANGER_UID);
        assert_ok(&run, "manager-publish-own");
        client_run_clear(&run);

        /* The sandbox is the stranger's, and its port works. */
        g_assert_cmpuint(n_sandboxes(f), ==, 2);
        g_assert_cmpuint(test_get_u32(f->bus, INTRUDER_PATH, TEST_SANDBOX_IFACE, "Owner"), ==,
                         STRANGER_UID);
        ports = test_get_property(f->bus, INTRUDER_PATH, TEST_SANDBOX_IFACE, "Ports");
        g_assert_cmpuint(g_variant_n_children(ports), ==, 1);
        first = g_variant_get_child_value(ports, 0);
        g_autoptr(GVariant) hp = test_get_property(f->bus, g_variant_get_string(first, NULL),
                                                   TEST_PORT_IFACE, "HostPort");
        port = g_variant_get_uint16(hp);
        assert_relays(port);

        sync_signals(f);
        g_ptr_array_set_size(f->signals, 0);
        run_client(f->bus, &f->victim, TRUE, remove, &run);
        g_assert_false(run.setup_failed);
        assert_ok(&run, "manager-remove-own");
        assert_ok(&run, "manager-remove-sandbox");
        client_run_clear(&run);
        g_assert_cmpuint(n_sandboxes(f), ==, 0);
        g_assert_cmpuint(n_ports(f), ==, 0);
        sync_signals(f);
        g_assert_cmpuint(count_signals(f, "SandboxRemoved"), ==, 2);
        g_assert_cmpuint(count_signals(f, "PortUnpublished"), ==, 2);
}

static const TestDaemonOptions bus_address_daemon = {};
static const TestDaemonOptions user_bus_daemon = { .user_bus = TRUE };

int main(int argc, char *argv[]) {
        if (argc >= 2 && strcmp(argv[1], "--client") == 0)
                return client_main(argc, argv);

        g_test_init(&argc, &argv, NULL);
        g_test_add("/authorization/stranger-denied", Fixture, &bus_address_daemon, fixture_setup,
                   test_stranger_denied, fixture_teardown);
        g_test_add("/authorization/root-allowed", Fixture, &bus_address_daemon, fixture_setup,
                   test_root_allowed, fixture_teardown);
        g_test_add("/authorization/user-bus-allows-all", Fixture, &user_bus_daemon, fixture_setup,
                   test_user_bus_allows_all, fixture_teardown);
        return g_test_run();
}
