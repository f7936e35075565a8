/* data/portpubctl.bash against the real daemon: verbs, options, and the sandbox ids and ports it
 * asks the daemon for, as bash would offer them */
#include <string.h>

#include <glib/gstdio.h>

#include "testlib.h"

/* Generous: the sanitizer build runs every portpubctl under ASan too. */
#define RUN_TIMEOUT_MS 30000

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
        char *address_opt; /* --address=BUS */
        char *varlink_opt; /* --varlink=SOCKET */
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        f->bus = test_bus_new();
        f->daemon = test_daemon_start(f->bus);
        f->address_opt = g_strdup_printf("--address=%s", f->bus->address);
        g_assert_nonnull(f->daemon->varlink);
        f->varlink_opt = g_strdup_printf("--varlink=%s", f->daemon->varlink);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        test_bus_free(f->bus);
        g_free(f->address_opt);
        g_free(f->varlink_opt);
}

/* Runs argv with portpubctl's directory first in PATH; asserts it exits 0 and returns its
 * stdout (its stderr in *ret_err). */
static char *run(const char *const *argv, char **ret_err) {
        g_auto(GStrv) env = g_get_environ();
        g_autofree char *dir = NULL, *path = NULL;
        const char *ctl = g_getenv("PORTPUBCTL");
        char *out = NULL, *err = NULL;

        g_assert_nonnull(ctl);
        dir = g_path_get_dirname(ctl);
        path = g_strdup_printf("%s:%s", dir, g_getenv("PATH") ? g_getenv("PATH") : "/usr/bin:/bin");
        env = g_environ_setenv(env, "PATH", path, TRUE);
        if (test_run(argv, (const char *const *) env, RUN_TIMEOUT_MS, &out, &err) != 0)
                g_error("%s failed: stdout:\n%s\nstderr:\n%s", argv[0], out, err);
        if (ret_err)
                *ret_err = err;
        else
                g_free(err);
        return out;
}

/* What bash does on TAB at the end of line: the completion function registered for portpubctl
 * runs with COMP_LINE, COMP_POINT and COMP_WORDS of the line; each line's offers (COMPREPLY)
 * are printed one a line, each line's list ended by "--". */
static const char completion_driver[] =
        "source \"$PORTPUB_DATA_DIR/portpubctl.bash\" || exit 1\n"
        "spec=$(complete -p portpubctl) || exit 1\n"
        "printf '%s\\n--\\n' \"$spec\"\n"
        "for line in \"$@\"; do\n"
        "        COMP_LINE=$line COMP_POINT=${#line} COMP_TYPE=9 COMP_KEY=9\n"
        "        read -r -a COMP_WORDS <<<\"$line\"\n"
        "        [[ $line == *' ' ]] && COMP_WORDS+=('')\n"
        "        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
        "        COMPREPLY=()\n"
        "        func=${spec#complete -F }; func=${func%% *}\n"
        "        \"$func\" portpubctl \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD - 1]}\"\n"
        "        printf '%s\\n' \"${COMPREPLY[@]}\"\n"
        "        echo --\n"
        "done\n";

static int compare_strings(gconstpointer a, gconstpointer b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The offers for each line, sorted and joined by spaces; the first entry is `complete -p`. */
static char **complete_lines(const char *const *lines) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autoptr(GPtrArray) result = g_ptr_array_new();
        g_autofree char *out = NULL, *err = NULL;
        g_auto(GStrv) out_lines = NULL;
        g_autoptr(GPtrArray) group = g_ptr_array_new();
        size_t n_lines = g_strv_length((char **) lines);

        g_ptr_array_add(argv, (char *) "bash");
        g_ptr_array_add(argv, (char *) "--norc");
        g_ptr_array_add(argv, (char *) "--noprofile");
        g_ptr_array_add(argv, (char *) "-c");
        g_ptr_array_add(argv, (char *) completion_driver);
        g_ptr_array_add(argv, (char *) "bash");
        for (size_t i = 0; i < n_lines; i++)
                g_ptr_array_add(argv, (char *) lines[i]);
        g_ptr_array_add(argv, NULL);

        out = run((const char *const *) argv->pdata, &err);
        /* Whatever the daemon said went nowhere near the terminal. */
        g_assert_cmpstr(err, ==, "");
        out_lines = g_strsplit(out, "\n", -1);
        for (char **l = out_lines; *l; l++) {
                if (strcmp(*l, "--") != 0) {
                        g_ptr_array_add(group, *l);
                        continue;
                }
                g_ptr_array_sort(group, compare_strings);
                g_ptr_array_add(group, NULL);
                g_ptr_array_add(result, g_strjoinv(" ", (char **) group->pdata));
                g_ptr_array_set_size(group, 0);
        }
        g_assert_cmpuint(result->len, ==, n_lines + 1);
        g_ptr_array_add(result, NULL);
        return (char **) g_ptr_array_free(g_steal_pointer(&result), FALSE);
}

static char *complete_one(const char *line) {
        const char *lines[] = { line, NULL };
        g_auto(GStrv) r = complete_lines(lines);

        return g_strdup(r[1]);
}

/* Publishes specs for sandbox with portpubctl; returns the ports as unpublish takes them,
 * HOST/PROTO, from what publish printed ("tcp 127.0.0.1:40000 -> 80 (/io/...)"). */
static GPtrArray *publish(Fixture *f, const char *sandbox, const char *const *specs) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        GPtrArray *ports = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *out = NULL;
        g_auto(GStrv) lines = NULL;

        g_ptr_array_add(argv, (char *) g_getenv("PORTPUBCTL"));
        g_ptr_array_add(argv, f->address_opt);
        g_ptr_array_add(argv, (char *) "publish");
        g_ptr_array_add(argv, (char *) sandbox);
        for (const char *const *s = specs; *s; s++)
                g_ptr_array_add(argv, (char *) *s);
        g_ptr_array_add(argv, (char *) "--guest=127.0.0.1");
        g_ptr_array_add(argv, NULL);
        out = run((const char *const *) argv->pdata, NULL);
        lines = g_strsplit(out, "\n", -1);
        for (char **l = lines; *l && **l; l++) {
                g_auto(GStrv) fields = g_strsplit(*l, " ", 3);

                g_assert_cmpuint(g_strv_length(fields), ==, 3);
                g_ptr_array_add(ports, g_strdup_printf("%s/%s", fields[1], fields[0]));
        }
        g_assert_cmpuint(ports->len, ==, g_strv_length((char **) specs));
        return ports;
}

static char *joined_sorted(GPtrArray *a, GPtrArray *b) {
        g_autoptr(GPtrArray) all = g_ptr_array_new();

        for (guint i = 0; i < a->len; i++)
                g_ptr_array_add(all, a->pdata[i]);
        for (guint i = 0; b && i < b->len; i++)
                g_ptr_array_add(all, b->pdata[i]);
        g_ptr_array_sort(all, compare_strings);
        g_ptr_array_add(all, NULL);
        return g_strjoinv(" ", (char **) all->pdata);
}

static void test_static(Fixture *f, gconstpointer data) {
        static const char *const lines[] = {
                "portpubctl ",
                "portpubctl --",
                "portpubctl s",
                "portpubctl --proxy-protocol=",
                "portpubctl publish web 8080:80 --proxy-protocol ",
                "portpubctl --u",
                "portpubctl --j",
                "portpubctl list --",
                "portpubctl publish web --idle",
                NULL,
        };
        g_auto(GStrv) r = complete_lines(lines);

        g_assert_cmpstr(r[0], ==, "complete -F _portpubctl portpubctl");
        g_assert_cmpstr(r[1], ==,
                        "list monitor publish remove sandboxes set-guest show status unpublish");
        g_assert_cmpstr(r[2], ==,
                        "--address= --bind-to-caller --guest= --help --idle-timeout= --json "
                        "--max-sessions= --no-ask-password --no-legend --proxy-protocol= --system "
                        "--user --varlink --varlink= --version");
        g_assert_cmpstr(r[3], ==, "sandboxes set-guest show status");
        /* readline replaces what follows '=': the values alone. */
        g_assert_cmpstr(r[4], ==, "v1 v2");
        g_assert_cmpstr(r[5], ==, "v1 v2");
        g_assert_cmpstr(r[6], ==, "--user");
        g_assert_cmpstr(r[7], ==, "--json");
        /* publish's options only where publish is (or may still be) the verb. */
        g_assert_cmpstr(r[8], ==,
                        "--address= --help --json --no-ask-password --no-legend --system --user "
                        "--varlink --varlink= --version");
        g_assert_cmpstr(r[9], ==, "--idle-timeout=");
}

static void test_from_daemon(Fixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) web =
                publish(f, "web", (const char *const[]){ "127.0.0.1:0:80", "[::1]::81/udp", NULL });
        g_autoptr(GPtrArray) db = publish(f, "db", (const char *const[]){ "0:5432", NULL });
        g_autofree char *web_ports = joined_sorted(web, NULL), *all_ports = joined_sorted(web, db);
        g_autofree char *l_remove = g_strdup_printf("portpubctl %s remove ", f->address_opt);
        g_autofree char *l_remove_w = g_strdup_printf("portpubctl %s remove w", f->address_opt);
        g_autofree char *l_status = g_strdup_printf("portpubctl status %s ", f->address_opt);
        g_autofree char *l_unpublish =
                g_strdup_printf("portpubctl %s unpublish web ", f->address_opt);
        g_autofree char *l_unpublish_v4 =
                g_strdup_printf("portpubctl %s unpublish web 127.0.0.1:", f->address_opt);
        g_autofree char *l_unpublish_2 = g_strdup_printf("portpubctl %s unpublish web %s ",
                                                         f->address_opt, (char *) web->pdata[0]);
        g_autofree char *l_show = g_strdup_printf("portpubctl %s show ", f->address_opt);
        g_autofree char *l_show_2 = g_strdup_printf("portpubctl %s show 80 ", f->address_opt);
        g_autofree char *l_publish = g_strdup_printf("portpubctl %s publish ", f->address_opt);
        g_autofree char *l_publish_2 = g_strdup_printf("portpubctl %s publish web ", f->address_opt);
        g_autofree char *l_set_guest =
                g_strdup_printf("portpubctl --address %s set-guest ", f->bus->address);
        g_autofree char *l_varlink = g_strdup_printf("portpubctl %s list ", f->varlink_opt);
        g_autofree char *l_varlink_ports =
                g_strdup_printf("portpubctl %s unpublish db ", f->varlink_opt);
        const char *lines[] = {
                l_remove,      l_remove_w, l_status,        l_unpublish, l_unpublish_v4,
                l_unpublish_2, l_show,     l_show_2,        l_publish,   l_publish_2,
                l_set_guest,   l_varlink,  l_varlink_ports, NULL,
        };
        g_auto(GStrv) r = complete_lines(lines);
        g_autofree char *v4_port = NULL;

        /* The first of web's ports is 127.0.0.1:PORT/tcp: after the ':' readline replaces
         * PORT/tcp. */
        g_assert_true(g_str_has_prefix(web->pdata[0], "127.0.0.1:"));
        v4_port = g_strdup((char *) web->pdata[0] + strlen("127.0.0.1:"));
        g_assert_true(g_str_has_prefix(web->pdata[1], "[::1]:"));
        g_assert_true(g_str_has_suffix(web->pdata[1], "/udp"));

        g_assert_cmpstr(r[1], ==, "db web");
        g_assert_cmpstr(r[2], ==, "web");
        g_assert_cmpstr(r[3], ==, "db web");
        g_assert_cmpstr(r[4], ==, web_ports);
        g_assert_cmpstr(r[5], ==, v4_port);
        /* Not the port already named. */
        g_assert_cmpstr(r[6], ==, (char *) web->pdata[1]);
        g_assert_cmpstr(r[7], ==, all_ports);
        g_assert_cmpstr(r[8], ==, ""); /* show takes one port */
        g_assert_cmpstr(r[9], ==, "db web");
        g_assert_cmpstr(r[10], ==, ""); /* specs are the user's */
        g_assert_cmpstr(r[11], ==, "db web");
        g_assert_cmpstr(r[12], ==, "db web");
        g_assert_cmpstr(r[13], ==, (char *) db->pdata[0]);
}

/* A daemon that cannot be reached offers nothing and prints nothing. */
static void test_no_daemon(Fixture *f, gconstpointer data) {
        g_autofree char *dir = g_dir_make_tmp("test-completion-XXXXXX", NULL);
        g_autofree char *line =
                g_strdup_printf("portpubctl --address=unix:path=%s/no-bus remove ", dir);
        g_autofree char *vline =
                g_strdup_printf("portpubctl --varlink=%s/no-socket unpublish web ", dir);
        g_autofree char *r = NULL, *v = NULL;

        g_assert_nonnull(dir);
        r = complete_one(line);
        v = complete_one(vline);
        g_assert_cmpstr(r, ==, "");
        g_assert_cmpstr(v, ==, "");
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/completion/static", Fixture, NULL, fixture_setup, test_static, fixture_teardown);
        g_test_add("/completion/from-daemon", Fixture, NULL, fixture_setup, test_from_daemon,
                   fixture_teardown);
        g_test_add("/completion/no-daemon", Fixture, NULL, fixture_setup, test_no_daemon,
                   fixture_teardown);
        return g_test_run();
}
