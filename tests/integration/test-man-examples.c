/* The EXAMPLES of man/portpubctl.1 run as printed: every "$ " line of its .EX blocks, in order,
 * in one /bin/sh, with portpubctl on $PATH talking to the real daemon over its default (system)
 * bus, which is the test's private bus; in a network namespace of the test's own, so that the
 * fixed ports of the examples clash with nothing on the host */
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testlib.h"

/* Generous: the sanitizer build runs every portpubctl under ASan too. */
#define SCRIPT_TIMEOUT_MS 60000

/* Why the test cannot run here, or NULL. */
static char *netns_unavailable;

static int loopback_up(void) {
        struct ifreq ifr = {};
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), r = 0;

        if (fd < 0)
                return -errno;
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
        if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
                r = -errno;
        ifr.ifr_flags |= IFF_UP;
        if (r == 0 && ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
                r = -errno;
        close(fd);
        return r;
}

/* Before any thread exists: unshare() moves the calling thread only. */
static void enter_network_namespace(void) {
        if (geteuid() != 0) {
                netns_unavailable = g_strdup("needs root for a network namespace of its own");
                return;
        }
        if (unshare(CLONE_NEWNET) < 0) {
                netns_unavailable = g_strdup_printf("unshare(CLONE_NEWNET): %s", g_strerror(errno));
                return;
        }
        if (loopback_up() < 0)
                netns_unavailable = g_strdup("cannot bring up lo in the new network namespace");
}

/* A line of the man page's source as the reader sees it: the escapes the examples use. */
static char *unroff(const char *line) {
        static const struct {
                const char *escape, *text;
        } escapes[] = {
                { "\\-", "-" }, { "\\(aq", "'" }, { "\\(dq", "\"" }, { "\\e", "\\" }, { "\\&", "" },
        };
        GString *s = g_string_new(NULL);

        for (const char *p = line; *p;) {
                gboolean known = FALSE;

                if (*p != '\\') {
                        g_string_append_c(s, *p++);
                        continue;
                }
                for (size_t i = 0; !known && i < G_N_ELEMENTS(escapes); i++)
                        if (g_str_has_prefix(p, escapes[i].escape)) {
                                g_string_append(s, escapes[i].text);
                                p += strlen(escapes[i].escape);
                                known = TRUE;
                        }
                if (!known)
                        g_error("an escape this test does not know in EXAMPLES: '%s'", line);
        }
        return g_string_free(s, FALSE);
}

typedef struct Example {
        char *command;
        int expect; /* exit status */
} Example;

static void example_free(gpointer data) {
        Example *e = data;

        g_free(e->command);
        g_free(e);
}

/* The "$ " lines of the .EX blocks of EXAMPLES. */
static GPtrArray *read_examples(void) {
        g_autofree char *path =
                g_build_filename(g_getenv("PORTPUB_SOURCE_ROOT"), "man", "portpubctl.1", NULL);
        g_autofree char *text = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GRegex) status = g_regex_new("#\\s*exit status ([0-9]+)\\s*$", 0, 0, NULL);
        g_auto(GStrv) lines = NULL;
        GPtrArray *examples = g_ptr_array_new_with_free_func(example_free);
        gboolean in_section = FALSE, in_block = FALSE;

        g_assert_true(g_file_get_contents(path, &text, NULL, &error));
        g_assert_no_error(error);
        lines = g_strsplit(text, "\n", -1);
        for (guint i = 0; lines[i]; i++) {
                const char *l = lines[i];

                if (g_str_has_prefix(l, ".SH")) {
                        in_section = strcmp(l, ".SH EXAMPLES") == 0;
                        continue;
                }
                if (!in_section)
                        continue;
                if (strcmp(l, ".EX") == 0)
                        in_block = TRUE;
                else if (strcmp(l, ".EE") == 0)
                        in_block = FALSE;
                else if (in_block && g_str_has_prefix(l, "$ ")) {
                        g_autoptr(GMatchInfo) m = NULL;
                        Example *e = g_new0(Example, 1);

                        e->command = unroff(l + 2);
                        if (g_regex_match(status, e->command, 0, &m)) {
                                g_autofree char *n = g_match_info_fetch(m, 1);

                                e->expect = atoi(n);
                        }
                        g_ptr_array_add(examples, e);
                }
        }
        g_assert_false(in_block);
        return examples;
}

static void on_exited(GObject *source, GAsyncResult *res, gpointer data) {
        (void) g_subprocess_wait_finish(G_SUBPROCESS(source), res, NULL);
        *(gboolean *) data = TRUE;
}

static gboolean is_true(gpointer data) {
        return *(gboolean *) data;
}

static void remove_tree(const char *dir) {
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        g_assert_nonnull(d);
        while ((name = g_dir_read_name(d))) {
                g_autofree char *p = g_build_filename(dir, name, NULL);

                g_assert_cmpint(unlink(p), ==, 0);
        }
        g_assert_cmpint(rmdir(dir), ==, 0);
}

static void test_examples(void) {
        g_autoptr(GPtrArray) examples = NULL;
        g_autoptr(GString) script = g_string_new("exec 3>statuses\n");
        g_autoptr(GSubprocessLauncher) launcher = NULL;
        g_autoptr(GSubprocess) sh = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *dir = NULL, *ctl_dir = NULL, *path = NULL, *statuses = NULL, *log = NULL,
                        *script_path = NULL, *log_path = NULL;
        g_auto(GStrv) got = NULL;
        TestBus *bus;
        TestDaemon *daemon;
        gboolean exited = FALSE;

        if (netns_unavailable) {
                g_test_skip(netns_unavailable);
                return;
        }
        examples = read_examples();
        /* publish, list, status, show, JSON, a clash, unpublish, remove, --bind-to-caller ... */
        g_assert_cmpuint(examples->len, >=, 15);

        bus = test_bus_new();
        daemon = test_daemon_start(bus);

        /* Each command, then its exit status on fd 3, one a line. */
        for (guint i = 0; i < examples->len; i++) {
                const Example *e = examples->pdata[i];

                g_string_append_printf(script, "%s\necho $? >&3\n", e->command);
        }
        dir = g_dir_make_tmp("portpub-man-examples-XXXXXX", &error);
        g_assert_no_error(error);
        script_path = g_build_filename(dir, "examples.sh", NULL);
        log_path = g_build_filename(dir, "output", NULL);
        g_assert_true(g_file_set_contents(script_path, script->str, -1, &error));
        g_assert_no_error(error);

        ctl_dir = g_path_get_dirname(g_getenv("PORTPUBCTL"));
        path = g_strdup_printf("%s:%s", ctl_dir, g_getenv("PATH"));
        launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDERR_MERGE);
        g_subprocess_launcher_set_cwd(launcher, dir);
        g_subprocess_launcher_setenv(launcher, "PATH", path, TRUE);
        g_subprocess_launcher_setenv(launcher, "DBUS_SYSTEM_BUS_ADDRESS", bus->address, TRUE);
        g_subprocess_launcher_set_stdout_file_path(launcher, log_path);
        sh = g_subprocess_launcher_spawn(launcher, &error, "/bin/sh", script_path, NULL);
        g_assert_no_error(error);
        g_subprocess_wait_async(sh, NULL, on_exited, &exited);
        if (!test_wait_until(is_true, &exited, SCRIPT_TIMEOUT_MS)) {
                g_subprocess_force_exit(sh);
                (void) test_wait_until(is_true, &exited, 5000);
        }
        (void) g_file_get_contents(log_path, &log, NULL, NULL);
        g_free(script_path);
        script_path = g_build_filename(dir, "statuses", NULL);
        g_assert_true(g_file_get_contents(script_path, &statuses, NULL, &error));
        g_assert_no_error(error);
        got = g_strsplit(statuses, "\n", -1);
        for (guint i = 0; i < examples->len; i++) {
                const Example *e = examples->pdata[i];

                if (!got[i] || !got[i][0] || atoi(got[i]) != e->expect) {
                        g_printerr("The examples' output:\n%s\n", log ? log : "");
                        g_error("example '%s': exit status %s, expected %d", e->command,
                                got[i] && got[i][0] ? got[i] : "(none: it did not end)", e->expect);
                }
        }
        g_assert_true(exited);
        g_assert_true(g_subprocess_get_if_exited(sh));

        g_assert_cmpint(test_daemon_stop(daemon), ==, 0);
        test_daemon_free(daemon);
        test_bus_free(bus);
        remove_tree(dir);
}

int main(int argc, char **argv) {
        enter_network_namespace();
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/man-examples/portpubctl", test_examples);
        return g_test_run();
}
