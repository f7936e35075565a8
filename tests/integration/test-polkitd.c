/* The real polkitd: a rule that grants one uid publish for sandboxes with a prefix, and nothing else
 *
 * Debian's polkitd, a system-type dbus-daemon with the project's bus policy, and portpubd as
 * user portpub on it (as its unit runs it), all in a private mount namespace where the project's polkit policy is
 * the only one in /usr/share/polkit-1/actions, a rules file of this test the only rule (over
 * /etc/polkit-1/rules.d, and an empty directory over /usr/share/polkit-1/rules.d), and copies of
 * /etc/passwd and /etc/group hold the user portpub. The rule lets uid 65534 ("nobody") publish
 * sandboxes whose id starts with "ci-": the test shows that it may do that, that the port it got
 * relays to the guest, and that it may do nothing else (another sandbox, a privileged port, a
 * sandbox of another uid).
 *
 * Three modes of this binary:
 *   test-polkitd [GTest options]
 *     The outer run, under meson. Without root every test skips. As root it runs the inner run
 *     once, as `unshare --mount --propagation private -- <itself> --in-namespace --dir=DIR`,
 *     and each of its tests asserts that the inner test of the same name ran and passed (the
 *     inner TAP lines are in its log).
 *   test-polkitd --in-namespace --dir=DIR [GTest options]
 *     The inner run: refuses to start unless its mount namespace is not its parent's; mounts a
 *     tmpfs on DIR and does everything there and under the bind mounts. The namespace, its
 *     mounts and the tmpfs end with the process; the host's /etc and /usr are never written.
 *   test-polkitd --client ADDRESS publish|unpublish ARGS...
 *     One call of a client as uid 65534, on its own bus connection; prints "uid=N" and then
 *     "ok HOST_PORT" or "error NAME MESSAGE". */
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define CLIENT_UID 65534
#define CLIENT_USER "nobody"
#define SANDBOX_PREFIX "ci-"
#define ACTION_PREFIX "io.portpub.Publisher1."
#define POLKIT_NAME "org.freedesktop.PolicyKit1"
#define POLKITD "/usr/lib/polkit-1/polkitd"
#define POLKIT_BUS_CONF "/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"
#define ACCESS_DENIED "org.freedesktop.DBus.Error.AccessDenied"
#define NO_SUCH_SANDBOX TEST_ERROR_PREFIX "NoSuchSandbox"

/* Within the 120 s meson gives the outer run. */
#define INNER_TIMEOUT_MS 100000
#define START_TIMEOUT_MS 20000
#define CLIENT_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS 10000

/* The tests, in the order they run; the outer and the inner run register the same names. */
static const char *const test_names[] = {
        "/polkitd/pkaction/lists-exactly-the-portpub-actions",
        "/polkitd/daemon/runs-as-portpub",
        "/polkitd/rule/grants-publish-of-prefixed-sandbox",
        "/polkitd/rule/granted-port-relays-to-guest",
        "/polkitd/rule/denies-sandbox-without-prefix",
        "/polkitd/rule/denies-privileged-port",
        "/polkitd/rule/denies-sandbox-of-another-uid",
        "/polkitd/teardown/stops-every-process",
};

G_STATIC_ASSERT(G_N_ELEMENTS(test_names) == 8);

/* ---- shared: waiting, running a program to its end ---- */

static gboolean set_flag(gpointer data) {
        *(gboolean *) data = TRUE;
        return G_SOURCE_REMOVE;
}

/* Iterates the default main context until cond(data) or the timeout. */
static gboolean wait_for(gboolean (*cond)(gpointer data), gpointer data, guint timeout_ms) {
        gboolean timed_out = FALSE;
        guint id = g_timeout_add(timeout_ms, set_flag, &timed_out);

        while (!cond(data) && !timed_out)
                g_main_context_iteration(NULL, TRUE);
        if (!timed_out)
                g_source_remove(id);
        return cond(data);
}

typedef struct Run {
        GSubprocess *proc;
        gboolean done;
        char *out;
        GError *error;
} Run;

static gboolean run_is_done(gpointer data) {
        return ((Run *) data)->done;
}

static void run_done(GObject *source, GAsyncResult *res, gpointer data) {
        Run *r = data;

        (void) g_subprocess_communicate_utf8_finish(G_SUBPROCESS(source), res, &r->out, NULL,
                                                    &r->error);
        r->done = TRUE;
}

/* Runs argv to its end with env (KEY, VALUE pairs) added and setup run in the child, and returns
 * its stdout (its stderr is ours) and its wait status. After timeout_ms it gets SIGTERM, 10 s
 * later SIGKILL: it, by its PID, and nothing else. */
static char *run_capture(const char *const *argv, const char *const *env,
                         GSpawnChildSetupFunc setup, guint timeout_ms, int *ret_status) {
        g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
        g_autoptr(GError) error = NULL;
        Run r = {};

        for (const char *const *e = env; e && e[0]; e += 2)
                g_subprocess_launcher_setenv(l, e[0], e[1], TRUE);
        if (setup)
                g_subprocess_launcher_set_child_setup(l, setup, NULL, NULL);
        r.proc = g_subprocess_launcher_spawnv(l, argv, &error);
        g_assert_no_error(error);
        g_subprocess_communicate_utf8_async(r.proc, NULL, NULL, run_done, &r);
        if (!wait_for(run_is_done, &r, timeout_ms)) {
                g_test_message("%s did not end within %u ms: SIGTERM to pid %s", argv[0],
                               timeout_ms, g_subprocess_get_identifier(r.proc));
                g_subprocess_send_signal(r.proc, SIGTERM);
                if (!wait_for(run_is_done, &r, STOP_TIMEOUT_MS)) {
                        g_subprocess_force_exit(r.proc);
                        g_assert_true(wait_for(run_is_done, &r, STOP_TIMEOUT_MS));
                }
        }
        g_assert_no_error(r.error);
        *ret_status = g_subprocess_get_status(r.proc);
        g_object_unref(r.proc);
        return r.out;
}

/* ---- the client: one call as uid 65534 ---- */

static int client_main(int argc, char **argv) {
        g_autoptr(GDBusConnection) conn = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        GVariantBuilder ports, options;
        const char *verb;
        guint16 port = 0;

        /* --client ADDRESS publish SANDBOX GUEST PROTO HOST_ADDRESS HOST_PORT GUEST_PORT
         * --client ADDRESS unpublish SANDBOX PROTO HOST_ADDRESS HOST_PORT */
        if (argc < 4)
                return 2;
        verb = argv[3];
        printf("uid=%u\n", (unsigned) getuid());
        conn = g_dbus_connection_new_for_address_sync(
                argv[2],
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!conn) {
                printf("connect-failed %s\n", error->message);
                return 2;
        }
        if (strcmp(verb, "publish") == 0 && argc == 10) {
                const char *guests[] = { argv[5], NULL };

                g_variant_builder_init(&ports, G_VARIANT_TYPE("a(ssqq)"));
                g_variant_builder_add(&ports, "(ssqq)", argv[6], argv[7], (guint16) atoi(argv[8]),
                                      (guint16) atoi(argv[9]));
                g_variant_builder_init(&options, G_VARIANT_TYPE("a{sv}"));
                reply = g_dbus_connection_call_sync(
                        conn, TEST_BUS_NAME, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                        g_variant_new("(s^asa(ssqq)a{sv})", argv[4], guests, &ports, &options),
                        G_VARIANT_TYPE("(oa(ssqqo))"), G_DBUS_CALL_FLAGS_NONE,
                        CLIENT_TIMEOUT_MS - 5000, NULL, &error);
                if (reply) {
                        g_autoptr(GVariant) published = NULL;

                        g_variant_get(reply, "(&o@a(ssqqo))", NULL, &published);
                        g_variant_get_child(published, 0, "(&s&sqq&o)", NULL, NULL, &port, NULL,
                                            NULL);
                }
        } else if (strcmp(verb, "unpublish") == 0 && argc == 8) {
                g_variant_builder_init(&ports, G_VARIANT_TYPE("a(ssq)"));
                g_variant_builder_add(&ports, "(ssq)", argv[5], argv[6], (guint16) atoi(argv[7]));
                reply = g_dbus_connection_call_sync(conn, TEST_BUS_NAME, TEST_MANAGER_PATH,
                                                    TEST_MANAGER_IFACE, "UnpublishPorts",
                                                    g_variant_new("(sa(ssq))", argv[4], &ports),
                                                    G_VARIANT_TYPE("()"), G_DBUS_CALL_FLAGS_NONE,
                                                    CLIENT_TIMEOUT_MS - 5000, NULL, &error);
        } else
                return 2;
        if (reply)
                printf("ok %u\n", port);
        else {
                g_autofree char *remote = g_dbus_error_get_remote_error(error);

                g_dbus_error_strip_remote_error(error);
                g_strdelimit(error->message, "\n", ' ');
                printf("error %s %s\n", remote ? remote : "(local)", error->message);
        }
        (void) g_dbus_connection_close_sync(conn, NULL, NULL);
        return 0;
}

/* ---- the inner run, in the private mount namespace ---- */

typedef struct Proc {
        const char *name;
        GPid pid;
        gboolean exited;
        int status; /* wait status, once exited */
} Proc;

typedef struct Env {
        char *dir;
        char *address;
        char *client;
        uid_t portpub_uid;
        gid_t portpub_gid;
        TestBus bus; /* root's connection; no GTestDBus */
        Proc dbus, polkitd, portpubd;
        TestEcho *echo;
        gboolean stopped;
} Env;

static Env env;
static const char *inner_dir;

/* What a fatal signal must stop: the processes this run started that have not exited. */
static volatile pid_t live_pids[3];

static void on_fatal_signal(int sig) {
        for (size_t i = 0; i < G_N_ELEMENTS(live_pids); i++)
                if (live_pids[i] > 0)
                        (void) kill(live_pids[i], SIGKILL);
        (void) raise(sig); /* SA_RESETHAND: the default action, once this handler returns */
}

static void catch_fatal_signals(void) {
        static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGABRT,
                                    SIGSEGV, SIGBUS, SIGFPE, SIGILL };
        struct sigaction sa = { .sa_handler = on_fatal_signal, .sa_flags = SA_RESETHAND };

        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < G_N_ELEMENTS(sigs); i++)
                g_assert_cmpint(sigaction(sigs[i], &sa, NULL), ==, 0);
}

static void on_proc_exit(GPid pid, gint status, gpointer data) {
        Proc *p = data;

        for (size_t i = 0; i < G_N_ELEMENTS(live_pids); i++)
                if (live_pids[i] == pid)
                        live_pids[i] = 0;
        p->exited = TRUE;
        p->status = status;
        g_spawn_close_pid(pid);
        g_printerr("test-polkitd: %s (pid %d) exited, wait status 0x%x\n", p->name, (int) pid,
                   (unsigned) status);
}

static gboolean proc_exited(gpointer data) {
        return ((Proc *) data)->exited;
}

/* dbus-daemon keeps it; polkitd and portpubd lose it when they change their uid, and go when the
 * bus does. */
static void die_with_parent(gpointer data) {
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* Starts argv with env added; its stdout goes to our stderr unless stdout_pipe is given. */
static void proc_start(Proc *p, const char *name, const char *const *argv,
                       const char *const *extra_env, int *stdout_pipe) {
        g_auto(GStrv) envp = g_get_environ();
        g_autoptr(GError) error = NULL;
        size_t slot;

        for (slot = 0; slot < G_N_ELEMENTS(live_pids) && live_pids[slot] > 0; slot++)
                ;
        g_assert_cmpuint(slot, <, G_N_ELEMENTS(live_pids));
        for (const char *const *e = extra_env; e && e[0]; e += 2)
                envp = g_environ_setenv(envp, e[0], e[1], TRUE);
        envp = g_environ_unsetenv(envp, "NOTIFY_SOCKET");
        *p = (Proc){ .name = name };
        g_spawn_async_with_pipes_and_fds(NULL, argv, (const char *const *) envp,
                                         G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH,
                                         die_with_parent, NULL, -1, stdout_pipe ? -1 : STDERR_FILENO,
                                         -1, NULL, NULL, 0, &p->pid, NULL, stdout_pipe, NULL, &error);
        g_assert_no_error(error);
        live_pids[slot] = p->pid;
        g_child_watch_add(p->pid, on_proc_exit, p);
        g_printerr("test-polkitd: started %s, pid %d\n", name, (int) p->pid);
}

/* SIGTERM to its PID, then SIGKILL if it is still there; TRUE when SIGTERM was enough. */
static gboolean proc_stop(Proc *p) {
        if (p->pid <= 0 || p->exited)
                return FALSE; /* never started, or it ended before it was asked to */
        g_assert_cmpint(kill(p->pid, SIGTERM), ==, 0);
        if (wait_for(proc_exited, p, STOP_TIMEOUT_MS))
                return TRUE;
        g_test_message("%s (pid %d) ignored SIGTERM: SIGKILL", p->name, (int) p->pid);
        (void) kill(p->pid, SIGKILL);
        (void) wait_for(proc_exited, p, STOP_TIMEOUT_MS);
        return FALSE;
}

typedef struct NameWait {
        gboolean owned;
        Proc *owner;
} NameWait;

static void on_name_appeared(GDBusConnection *c, const char *name, const char *owner, gpointer data) {
        ((NameWait *) data)->owned = TRUE;
}

static gboolean name_owned_or_owner_gone(gpointer data) {
        NameWait *w = data;

        return w->owned || w->owner->exited;
}

static void wait_for_name(const char *name, Proc *owner) {
        NameWait w = { .owner = owner };
        guint id = g_bus_watch_name_on_connection(env.bus.conn, name, G_BUS_NAME_WATCHER_FLAGS_NONE,
                                                  on_name_appeared, NULL, &w, NULL);

        (void) wait_for(name_owned_or_owner_gone, &w, START_TIMEOUT_MS);
        g_bus_unwatch_name(id);
        if (!w.owned)
                g_error("%s did not own %s within %u ms%s (its output is above)", owner->name, name,
                        START_TIMEOUT_MS, owner->exited ? ": it exited" : "");
}

static char *dir_path(const char *name) {
        return g_build_filename(env.dir, name, NULL);
}

static void write_file(const char *path, const char *contents, mode_t mode) {
        g_autoptr(GError) error = NULL;

        g_file_set_contents(path, contents, -1, &error);
        g_assert_no_error(error);
        g_assert_cmpint(chmod(path, mode), ==, 0);
}

static char *make_dir(const char *name) {
        char *p = dir_path(name);

        g_assert_cmpint(mkdir(p, 0755), ==, 0);
        return p;
}

static void bind_mount(const char *source, const char *target) {
        g_assert_true(g_file_test(target, G_FILE_TEST_EXISTS));
        if (mount(source, target, NULL, MS_BIND, NULL) < 0)
                g_error("bind-mounting %s over %s: %s", source, target, g_strerror(errno));
}

static gboolean same_mount_ns(pid_t a, pid_t b) {
        g_autofree char *pa = g_strdup_printf("/proc/%d/ns/mnt", (int) a);
        g_autofree char *pb = g_strdup_printf("/proc/%d/ns/mnt", (int) b);
        struct stat sa, sb;

        g_assert_cmpint(stat(pa, &sa), ==, 0);
        g_assert_cmpint(stat(pb, &sb), ==, 0);
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The user portpub: the host's, or a free system uid and gid added to copies of /etc/passwd and
 * /etc/group bind-mounted over the originals (polkitd, dbus-daemon and portpubd run here, in
 * this namespace, and see the copies). */
static void setup_portpub_user(void) {
        g_autofree char *passwd = NULL, *group = NULL, *pw_copy = NULL, *gr_copy = NULL;
        g_autoptr(GError) error = NULL;
        struct passwd *pw = getpwnam("portpub");
        guint id;

        if (pw) {
                env.portpub_uid = pw->pw_uid;
                env.portpub_gid = pw->pw_gid;
                g_test_message("user portpub exists: uid %u", (unsigned) pw->pw_uid);
                return;
        }
        for (id = 999; id >= 100; id--)
                if (!getpwuid(id) && !getgrgid(id))
                        break;
        g_assert_cmpuint(id, >=, 100);
        g_file_get_contents("/etc/passwd", &passwd, NULL, &error);
        g_assert_no_error(error);
        g_file_get_contents("/etc/group", &group, NULL, &error);
        g_assert_no_error(error);
        pw_copy = dir_path("passwd");
        gr_copy = dir_path("group");
        {
                g_autofree char *p = g_strdup_printf(
                        "%s%sportpub:x:%u:%u:portpub test user:/nonexistent:/usr/sbin/nologin\n",
                        passwd, g_str_has_suffix(passwd, "\n") || !*passwd ? "" : "\n", id, id);
                g_autofree char *g =
                        g_strdup_printf("%s%sportpub:x:%u:\n", group,
                                        g_str_has_suffix(group, "\n") || !*group ? "" : "\n", id);

                write_file(pw_copy, p, 0644);
                write_file(gr_copy, g, 0644);
        }
        bind_mount(pw_copy, "/etc/passwd");
        bind_mount(gr_copy, "/etc/group");
        pw = getpwnam("portpub");
        g_assert_nonnull(pw);
        g_assert_cmpuint(pw->pw_uid, ==, id);
        env.portpub_uid = id;
        env.portpub_gid = id;
        g_test_message("added user portpub, uid %u, in this namespace", id);
}

/* The project's polkit policy, alone, over /usr/share/polkit-1/actions; the rule of this test,
 * alone, over /etc/polkit-1/rules.d; nothing over /usr/share/polkit-1/rules.d. */
static void setup_polkit_files(void) {
        const char *data = g_getenv("PORTPUB_DATA_DIR");
        g_autofree char *src = NULL, *policy = NULL, *actions = NULL, *rules = NULL,
                        *no_rules = NULL, *dst = NULL, *rule_file = NULL;
        g_autoptr(GError) error = NULL;

        g_assert_nonnull(data);
        src = g_build_filename(data, "io.portpub.Publisher1.policy", NULL);
        g_file_get_contents(src, &policy, NULL, &error);
        g_assert_no_error(error);
        actions = make_dir("actions");
        dst = g_build_filename(actions, "io.portpub.Publisher1.policy", NULL);
        write_file(dst, policy, 0644);

        rules = make_dir("rules");
        rule_file = g_build_filename(rules, "50-portpub-test.rules", NULL);
        write_file(rule_file,
                   "// test-polkitd: " CLIENT_USER " may publish the sandboxes whose id starts with\n"
                   "// \"" SANDBOX_PREFIX "\", and is granted nothing else.\n"
                   "polkit.addRule(function(action, subject) {\n"
                   "        if (action.id == \"" ACTION_PREFIX "publish\" &&\n"
                   "            subject.user == \"" CLIENT_USER "\" &&\n"
                   "            (action.lookup(\"sandbox\") || \"\").indexOf(\"" SANDBOX_PREFIX
                   "\") == 0)\n"
                   "                return polkit.Result.YES;\n"
                   "});\n",
                   0644);
        no_rules = make_dir("no-rules");

        bind_mount(actions, "/usr/share/polkit-1/actions");
        bind_mount(rules, "/etc/polkit-1/rules.d");
        bind_mount(no_rules, "/usr/share/polkit-1/rules.d");
}

/* Like Debian's system bus: deny owning and calling by default, then the services' own policies
 * (polkit's from Debian, portpub's from this tree) punch the holes. */
static char *bus_config(const char *socket_path) {
        g_autofree char *portpub_conf =
                g_build_filename(g_getenv("PORTPUB_DATA_DIR"), "io.portpub.Publisher1.conf", NULL);

        return g_markup_printf_escaped(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                "<busconfig>\n"
                "  <type>system</type>\n"
                "  <listen>unix:path=%s</listen>\n"
                "  <auth>EXTERNAL</auth>\n"
                "  <policy context=\"default\">\n"
                "    <allow user=\"*\"/>\n"
                "    <deny own=\"*\"/>\n"
                "    <deny send_type=\"method_call\"/>\n"
                "    <allow send_type=\"signal\"/>\n"
                "    <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\n"
                "    <allow send_requested_reply=\"true\" send_type=\"error\"/>\n"
                "    <allow receive_type=\"method_call\"/>\n"
                "    <allow receive_type=\"method_return\"/>\n"
                "    <allow receive_type=\"error\"/>\n"
                "    <allow receive_type=\"signal\"/>\n"
                "    <allow send_destination=\"org.freedesktop.DBus\"\n"
                "           send_interface=\"org.freedesktop.DBus\"/>\n"
                "    <allow send_destination=\"org.freedesktop.DBus\"\n"
                "           send_interface=\"org.freedesktop.DBus.Introspectable\"/>\n"
                "    <allow send_destination=\"org.freedesktop.DBus\"\n"
                "           send_interface=\"org.freedesktop.DBus.Properties\"/>\n"
                "    <deny send_destination=\"org.freedesktop.DBus\"\n"
                "          send_interface=\"org.freedesktop.DBus\"\n"
                "          send_member=\"UpdateActivationEnvironment\"/>\n"
                "  </policy>\n"
                "  <include>%s</include>\n"
                "  <include>%s</include>\n"
                "</busconfig>\n",
                socket_path, POLKIT_BUS_CONF, portpub_conf);
}

static void start_dbus(void) {
        g_autofree char *socket_path = dir_path("bus"), *conf_path = dir_path("bus.conf");
        g_autofree char *conf = bus_config(socket_path), *conf_arg = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GString) line = g_string_new(NULL);
        gint64 deadline = g_get_monotonic_time() + (gint64) START_TIMEOUT_MS * 1000;
        struct sockaddr_un sa;
        int fd = -1;

        g_assert_cmpuint(strlen(socket_path), <, sizeof sa.sun_path);
        g_assert_true(g_file_test(POLKIT_BUS_CONF, G_FILE_TEST_EXISTS));
        write_file(conf_path, conf, 0644);
        conf_arg = g_strdup_printf("--config-file=%s", conf_path);
        {
                const char *argv[] = { "dbus-daemon",       conf_arg, "--nofork", "--nopidfile",
                                       "--print-address=1", NULL };

                proc_start(&env.dbus, "dbus-daemon", argv, NULL, &fd);
        }
        /* It prints its address once it listens. */
        while (!strchr(line->str, '\n')) {
                gint64 left = deadline - g_get_monotonic_time();
                GPollFD p = { .fd = fd, .events = G_IO_IN };
                char buf[256];
                ssize_t n;

                if (left <= 0 || g_poll(&p, 1, (int) (left / 1000)) <= 0)
                        g_error("dbus-daemon printed no address within %u ms", START_TIMEOUT_MS);
                n = read(fd, buf, sizeof buf);
                if (n <= 0)
                        g_error("dbus-daemon ended before it printed its address");
                g_string_append_len(line, buf, n);
        }
        close(fd);
        env.address = g_strndup(line->str, strcspn(line->str, "\n"));
        env.bus.address = env.address;
        env.bus.conn = g_dbus_connection_new_for_address_sync(
                env.address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        g_assert_no_error(error);
        g_dbus_connection_set_exit_on_close(env.bus.conn, FALSE);
        g_test_message("dbus-daemon (pid %d) at %s", (int) env.dbus.pid, env.address);
}

static void start_polkitd(void) {
        const char *argv[] = { POLKITD, "--no-debug", NULL };
        const char *extra[] = { "DBUS_SYSTEM_BUS_ADDRESS", env.address, NULL };

        g_assert_true(g_file_test(POLKITD, G_FILE_TEST_IS_EXECUTABLE));
        proc_start(&env.polkitd, "polkitd", argv, extra, NULL);
        /* GDBus exports the authority before it asks for the name. */
        wait_for_name(POLKIT_NAME, &env.polkitd);
        g_test_message("polkitd (pid %d) owns %s", (int) env.polkitd.pid, POLKIT_NAME);
}

/* As the unit starts it: user portpub from the start, CAP_NET_BIND_SERVICE as an ambient
 * capability (User=, AmbientCapabilities=). Its bus connection is then portpub's, so owning the
 * name takes the bus policy's rule for portpub, and polkitd answers it about other users only
 * because portpub owns the actions (org.freedesktop.policykit.owner). (--run-as=, which connects
 * as root and drops afterwards, is tested in test-daemon.) */
static void start_portpubd(void) {
        g_autofree char *bus_arg = g_strdup_printf("--bus-address=%s", env.address);
        g_autofree char *state_dir = make_dir("state");
        g_autofree char *state_arg = g_strdup_printf("--state-file=%s/state", state_dir);
        g_autofree char *uid_arg = g_strdup_printf("--reuid=%u", (unsigned) env.portpub_uid);
        g_autofree char *gid_arg = g_strdup_printf("--regid=%u", (unsigned) env.portpub_gid);
        const char *argv[] = { "setpriv",
                               uid_arg,
                               gid_arg,
                               "--clear-groups",
                               "--inh-caps=+net_bind_service",
                               "--ambient-caps=+net_bind_service",
                               "--",
                               g_getenv("PORTPUBD"),
                               bus_arg,
                               state_arg,
                               "--varlink=no",
                               "--log-level=debug",
                               NULL };

        g_assert_nonnull(argv[7]);
        g_assert_cmpint(chown(state_dir, env.portpub_uid, env.portpub_gid), ==, 0);
        proc_start(&env.portpubd, "portpubd", argv, NULL, NULL);
        wait_for_name(TEST_BUS_NAME, &env.portpubd);
        g_test_message("portpubd (pid %d) owns %s", (int) env.portpubd.pid, TEST_BUS_NAME);
}

/* uid 65534 must be able to run the client: a copy of this binary on the tmpfs. */
static void setup_client(void) {
        g_autofree char *bin = NULL;
        g_autoptr(GError) error = NULL;
        gsize len;

        g_file_get_contents("/proc/self/exe", &bin, &len, &error);
        g_assert_no_error(error);
        env.client = dir_path("client");
        g_file_set_contents(env.client, bin, (gssize) len, &error);
        g_assert_no_error(error);
        g_assert_cmpint(chmod(env.client, 0755), ==, 0);
}

static Env *env_up(void) {
        struct passwd *nobody;

        if (env.dir)
                return &env;
        g_assert_false(env.stopped);
        env.dir = g_strdup(inner_dir);
        if (mount("tmpfs", env.dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
                g_error("mounting a tmpfs on %s: %s", env.dir, g_strerror(errno));
        nobody = getpwuid(CLIENT_UID);
        if (!nobody || strcmp(nobody->pw_name, CLIENT_USER) != 0)
                g_error("uid %d is not \"%s\" here; the rule names the client by user name",
                        CLIENT_UID, CLIENT_USER);
        setup_portpub_user();
        setup_polkit_files();
        setup_client();
        start_dbus();
        start_polkitd();
        start_portpubd();
        env.echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "guest:");
        return &env;
}

/* Stops what the run started, each by its PID, the daemon first while its bus is there. */
static gboolean env_down(void) {
        gboolean clean = TRUE;

        if (env.stopped || !env.dir)
                return TRUE;
        env.stopped = TRUE;
        if (!proc_stop(&env.portpubd) ||
            !(WIFEXITED(env.portpubd.status) && WEXITSTATUS(env.portpubd.status) == 0))
                clean = FALSE;
        if (!proc_stop(&env.polkitd))
                clean = FALSE;
        if (env.bus.conn) {
                (void) g_dbus_connection_close_sync(env.bus.conn, NULL, NULL);
                g_clear_object(&env.bus.conn);
        }
        if (!proc_stop(&env.dbus))
                clean = FALSE;
        test_echo_free(env.echo);
        env.echo = NULL;
        return clean;
}

static void become_client(gpointer data) {
        gid_t gid = CLIENT_UID;

        if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 ||
            setresuid(CLIENT_UID, CLIENT_UID, CLIENT_UID) < 0)
                _exit(127);
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL); /* after the uid change, which clears it */
}

typedef struct Reply {
        gboolean ok;
        guint16 port;
        char *error_name;
        char *message;
} Reply;

static void reply_clear(Reply *r) {
        g_free(r->error_name);
        g_free(r->message);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Reply, reply_clear)

/* One call by the client as uid 65534; asserts that it ran as that uid. */
static Reply client_call(const char *const *args) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autofree char *out = NULL;
        g_auto(GStrv) lines = NULL;
        Reply r = {};
        int status;

        g_ptr_array_add(argv, env.client);
        g_ptr_array_add(argv, (char *) "--client");
        g_ptr_array_add(argv, env.address);
        for (const char *const *a = args; *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        g_ptr_array_add(argv, NULL);
        out = run_capture((const char *const *) argv->pdata, NULL, become_client, CLIENT_TIMEOUT_MS,
                          &status);
        g_test_message("client %s %s: %s", args[0], args[1], out);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        lines = g_strsplit(out, "\n", 3);
        g_assert_cmpuint(g_strv_length(lines), >=, 2);
        g_assert_cmpstr(lines[0], ==, "uid=" G_STRINGIFY(CLIENT_UID));
        if (g_str_has_prefix(lines[1], "ok ")) {
                r.ok = TRUE;
                r.port = (guint16) atoi(lines[1] + 3);
        } else {
                g_auto(GStrv) parts = g_strsplit(lines[1], " ", 3);

                g_assert_cmpstr(parts[0], ==, "error");
                g_assert_nonnull(parts[1]);
                r.error_name = g_strdup(parts[1]);
                r.message = g_strdup(parts[2] ? parts[2] : "");
        }
        return r;
}

static Reply client_publish(const char *sandbox, guint16 host_port) {
        g_autofree char *hp = g_strdup_printf("%u", host_port);
        g_autofree char *gp = g_strdup_printf("%u", test_echo_port(env.echo));
        const char *args[] = { "publish", sandbox, "127.0.0.1", "tcp", "127.0.0.1", hp, gp, NULL };

        return client_call(args);
}

/* Denied by polkit's answer about exactly this action (not because polkit could not be asked). */
static void assert_denied_by_polkit(const Reply *r, const char *sandbox, const char *action) {
        g_autofree char *names_sandbox = g_strdup_printf("sandbox '%s'", sandbox);
        g_autofree char *names_action = g_strdup_printf("(" ACTION_PREFIX "%s)", action);

        g_assert_false(r->ok);
        g_assert_cmpstr(r->error_name, ==, ACCESS_DENIED);
        g_assert_nonnull(strstr(r->message, names_sandbox));
        g_assert_nonnull(strstr(r->message, names_action));
        g_assert_null(strstr(r->message, "could not be"));
}

static void assert_no_sandbox(const char *sandbox) {
        g_free(test_call_expect_error(&env.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "GetSandbox",
                                      g_variant_new("(s)", sandbox), NO_SUCH_SANDBOX));
}

static guint32 sandbox_owner(const char *sandbox) {
        g_autoptr(GVariant) v = NULL;
        g_autoptr(GError) error = NULL;
        const char *path;

        v = test_call(&env.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "GetSandbox",
                      g_variant_new("(s)", sandbox), "(o)", &error);
        g_assert_no_error(error);
        g_variant_get(v, "(&o)", &path);
        return test_get_u32(&env.bus, path, TEST_SANDBOX_IFACE, "Owner");
}

static void assert_port_of(guint16 port, const char *sandbox) {
        g_autoptr(GVariant) v = NULL, s = NULL;
        g_autoptr(GError) error = NULL;
        const char *path;

        v = test_call(&env.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "GetPort",
                      g_variant_new("(ssq)", "tcp", "127.0.0.1", port), "(o)", &error);
        g_assert_no_error(error);
        g_variant_get(v, "(&o)", &path);
        s = test_get_property(&env.bus, path, TEST_PORT_IFACE, "Sandbox");
        g_assert_cmpstr(g_variant_get_string(s, NULL), ==, sandbox);
}

static gint compare_strings(gconstpointer a, gconstpointer b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* pkaction, on this bus, lists the three actions of the project's policy and nothing else: polkitd
 * loaded the policy, from the directory mounted over Debian's. */
static void test_pkaction(void) {
        const char *argv[] = { "pkaction", NULL };
        const char *extra[] = { "DBUS_SYSTEM_BUS_ADDRESS", env_up()->address, NULL };
        g_autofree char *out = NULL, *joined = NULL;
        g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
        g_auto(GStrv) lines = NULL;
        int status;

        out = run_capture(argv, extra, die_with_parent, CLIENT_TIMEOUT_MS, &status);
        g_test_message("pkaction:\n%s", out);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        lines = g_strsplit(out, "\n", -1);
        for (char **l = lines; *l; l++)
                if (*g_strstrip(*l))
                        g_ptr_array_add(ids, g_strdup(*l));
        g_ptr_array_sort(ids, compare_strings);
        g_ptr_array_add(ids, NULL);
        joined = g_strjoinv(" ", (char **) ids->pdata);
        g_assert_cmpstr(joined, ==,
                        ACTION_PREFIX "manage-all " ACTION_PREFIX "publish " ACTION_PREFIX
                                      "publish-privileged");
}

/* The daemon dropped root: user portpub, every uid and gid. */
static void test_runs_as_portpub(void) {
        Env *e = env_up();
        g_autofree char *path = g_strdup_printf("/proc/%d/status", (int) e->portpubd.pid);
        g_autofree char *status = NULL, *uids = NULL, *gids = NULL;
        g_autoptr(GError) error = NULL;

        g_assert_false(e->portpubd.exited);
        g_file_get_contents(path, &status, NULL, &error);
        g_assert_no_error(error);
        uids = g_strdup_printf("\nUid:\t%u\t%u\t%u\t%u\n", e->portpub_uid, e->portpub_uid,
                               e->portpub_uid, e->portpub_uid);
        gids = g_strdup_printf("\nGid:\t%u\t%u\t%u\t%u\n", e->portpub_gid, e->portpub_gid,
                               e->portpub_gid, e->portpub_gid);
        g_assert_nonnull(strstr(status, uids));
        g_assert_nonnull(strstr(status, gids));
}

/* The rule grants uid 65534 publish for "ci-web": it gets the port, and the sandbox is its own. */
static void test_grants_prefixed(void) {
        g_auto(Reply) r = { 0 };

        env_up();
        r = client_publish(SANDBOX_PREFIX "web", 0);
        if (!r.ok)
                g_error("publishing %sweb was refused: %s: %s", SANDBOX_PREFIX, r.error_name,
                        r.message);
        g_assert_cmpuint(r.port, >, 0);
        g_assert_cmpuint(sandbox_owner(SANDBOX_PREFIX "web"), ==, CLIENT_UID);
        assert_port_of(r.port, SANDBOX_PREFIX "web");
}

/* The port uid 65534 was granted answers: bytes go through it to the guest and back. */
static void test_granted_port_relays(void) {
        g_auto(Reply) r = { 0 };
        int fd;

        env_up();
        r = client_publish(SANDBOX_PREFIX "echo", 0);
        if (!r.ok)
                g_error("publishing %secho was refused: %s: %s", SANDBOX_PREFIX, r.error_name,
                        r.message);
        fd = test_tcp_connect("127.0.0.1", r.port, 5000);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "through the port of uid 65534", "guest:through the port of uid 65534");
        close(fd);
}

/* A sandbox without the prefix: polkit does not grant publish, and nothing is created. */
static void test_denies_without_prefix(void) {
        g_auto(Reply) r = { 0 };

        env_up();
        r = client_publish("other", 0);
        assert_denied_by_polkit(&r, "other", "publish");
        assert_no_sandbox("other");
}

/* A port below ip_unprivileged_port_start in a "ci-" sandbox: publish is granted, but
 * publish-privileged is not, and nothing is created. */
static void test_denies_privileged_port(void) {
        g_autofree char *start_s = NULL;
        g_autoptr(GError) error = NULL;
        guint start;

        env_up();
        g_file_get_contents("/proc/sys/net/ipv4/ip_unprivileged_port_start", &start_s, NULL, &error);
        g_assert_no_error(error);
        start = (guint) atoi(start_s);
        g_assert_cmpuint(start, >, 1); /* else no port is privileged here */
        {
                g_auto(Reply) r = client_publish(SANDBOX_PREFIX "x", MIN(81, start - 1));

                assert_denied_by_polkit(&r, SANDBOX_PREFIX "x", "publish-privileged");
        }
        assert_no_sandbox(SANDBOX_PREFIX "x");
}

/* A "ci-" sandbox that root published: publish is granted, manage-all is not, so uid 65534 may
 * not unpublish its port, which stays. */
static void test_denies_other_uid(void) {
        const char *sandbox = SANDBOX_PREFIX "root-box";
        g_autoptr(GVariant) v = NULL, published = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *hp = NULL;
        guint16 port;

        env_up();
        v = test_call(&env.bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                      g_variant_new("(s@as@a(ssqq)@a{sv})", sandbox,
                                    g_variant_new_parsed("['127.0.0.1']"),
                                    g_variant_new_parsed("[('tcp', '127.0.0.1', uint16 0, %q)]",
                                                         test_echo_port(env.echo)),
                                    g_variant_new("a{sv}", NULL)),
                      "(oa(ssqqo))", &error);
        g_assert_no_error(error);
        g_variant_get(v, "(&o@a(ssqqo))", NULL, &published);
        g_variant_get_child(published, 0, "(&s&sqq&o)", NULL, NULL, &port, NULL, NULL);
        g_assert_cmpuint(sandbox_owner(sandbox), ==, 0);
        hp = g_strdup_printf("%u", port);
        {
                const char *args[] = { "unpublish", sandbox, "tcp", "127.0.0.1", hp, NULL };
                g_auto(Reply) r = client_call(args);

                assert_denied_by_polkit(&r, sandbox, "manage-all");
        }
        assert_port_of(port, sandbox);
}

/* Every process this run started ends on SIGTERM to its PID; portpubd with status 0. */
static void test_teardown(void) {
        env_up();
        g_assert_true(env_down());
}

static int inner_main(int argc, char **argv) {
        g_assert_cmpuint(geteuid(), ==, 0);
        /* Never touch the host's mounts: this must be a namespace of our own, and private. */
        if (same_mount_ns(getpid(), getppid()))
                g_error("--in-namespace: the mount namespace is the parent's; not mounting anything");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                g_error("making / private: %s", g_strerror(errno));
        catch_fatal_signals();
        signal(SIGPIPE, SIG_IGN);
        g_test_add_func(test_names[0], test_pkaction);
        g_test_add_func(test_names[1], test_runs_as_portpub);
        g_test_add_func(test_names[2], test_grants_prefixed);
        g_test_add_func(test_names[3], test_granted_port_relays);
        g_test_add_func(test_names[4], test_denies_without_prefix);
        g_test_add_func(test_names[5], test_denies_privileged_port);
        g_test_add_func(test_names[6], test_denies_other_uid);
        g_test_add_func(test_names[7], test_teardown);
        {
                int r = g_test_run();

                if (!env_down())
                        r = 1;
                return r;
        }
}

/* ---- the outer run ---- */

typedef struct Inner {
        gboolean ran;
        int status;
        GHashTable *lines; /* test path -> its TAP line */
} Inner;

static Inner inner;

/* The inner run goes if we do. */
static void inner_child_setup(gpointer data) {
        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
}

static void run_inner(void) {
        g_autoptr(GError) error = NULL;
        g_autofree char *self = g_file_read_link("/proc/self/exe", &error);
        g_autofree char *dir = NULL, *dir_arg = NULL, *out = NULL;
        g_auto(GStrv) lines = NULL;

        g_assert_no_error(error);
        dir = g_dir_make_tmp("portpub-polkitd-XXXXXX", &error);
        g_assert_no_error(error);
        dir_arg = g_strdup_printf("--dir=%s", dir);
        {
                const char *argv[] = {
                        "unshare",        "--mount", "--propagation", "private", "--", self,
                        "--in-namespace", dir_arg,   "--tap",         "-k",      NULL
                };

                out = run_capture(argv, NULL, inner_child_setup, INNER_TIMEOUT_MS, &inner.status);
        }
        /* The tmpfs was mounted in the inner run's namespace only: here the directory is empty. */
        if (rmdir(dir) < 0)
                g_test_message("could not remove %s: %s", dir, g_strerror(errno));
        inner.lines = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        lines = g_strsplit(out, "\n", -1);
        for (char **l = lines; *l; l++) {
                const char *p = *l;

                g_test_message("inner| %s", p);
                if (g_str_has_prefix(p, "not ok "))
                        p += 7;
                else if (g_str_has_prefix(p, "ok "))
                        p += 3;
                else
                        continue;
                p += strspn(p, "0123456789");
                if (*p++ != ' ')
                        continue;
                g_hash_table_replace(inner.lines, g_strndup(p, strcspn(p, " ")), g_strdup(*l));
        }
        g_test_message("inner run: wait status 0x%x", (unsigned) inner.status);
        inner.ran = TRUE;
}

static void outer_test(gconstpointer data) {
        const char *name = data;
        const char *line;

        if (geteuid() != 0) {
                g_test_skip("needs root: a private mount namespace with bind mounts over /etc and "
                            "/usr/share, polkitd, and clients of other uids");
                return;
        }
        if (!inner.ran)
                run_inner();
        line = g_hash_table_lookup(inner.lines, name);
        if (!line) {
                g_test_message("the inner run has no result for %s: it ended before (wait status "
                               "0x%x; its TAP output is above, its stderr in the log)",
                               name, (unsigned) inner.status);
                g_test_fail();
                return;
        }
        g_test_message("inner result: %s", line);
        if (!g_str_has_prefix(line, "ok ") || strstr(line, "# SKIP")) {
                g_test_fail();
                return;
        }
        /* The last test also says that the inner run as a whole ended well. */
        if (strcmp(name, test_names[G_N_ELEMENTS(test_names) - 1]) == 0 &&
            !(WIFEXITED(inner.status) && WEXITSTATUS(inner.status) == 0)) {
                g_test_message("the inner run ended with wait status 0x%x", (unsigned) inner.status);
                g_test_fail();
        }
}

int main(int argc, char **argv) {
        if (argc >= 2 && strcmp(argv[1], "--client") == 0)
                return client_main(argc, argv);
        if (argc >= 3 && strcmp(argv[1], "--in-namespace") == 0 &&
            g_str_has_prefix(argv[2], "--dir=")) {
                inner_dir = argv[2] + strlen("--dir=");
                argv[2] = argv[0];
                argc -= 2;
                argv += 2;
                g_test_init(&argc, &argv, NULL);
                return inner_main(argc, argv);
        }
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(test_names); i++)
                g_test_add_data_func(test_names[i], test_names[i], outer_test);
        {
                int r = g_test_run();

                if (inner.lines)
                        g_hash_table_destroy(inner.lines);
                return r;
        }
}
