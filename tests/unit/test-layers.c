/* The layers of ARCHITECTURE.md hold: nothing under src/core, src/relay or src/varlink includes a
 * systemd header, and their libraries reference no sd_* symbol (sd-bus, sd-daemon...).
 * Usage: test-layers SOURCE_ROOT CORE_LIB RELAY_LIB VARLINK_LIB [GTest options] */
#include <string.h>

#include <glib.h>

static const char *arg_source_root, *arg_core_lib, *arg_relay_lib, *arg_varlink_lib;

static GRegex *systemd_include(void) {
        g_autoptr(GError) error = NULL;
        GRegex *re = g_regex_new("^[ \\t]*#[ \\t]*include[ \\t]*[<\"]systemd/", G_REGEX_MULTILINE,
                                 0, &error);

        g_assert_no_error(error);
        return re;
}

/* Reads every file under dir (recursively) and appends "path:line: text" of each systemd
 * include to hits; returns the number of files read. */
static guint scan_dir(const char *dir, GRegex *re, GString *hits) {
        g_autoptr(GDir) d = NULL;
        g_autoptr(GError) error = NULL;
        const char *name;
        guint n = 0;

        d = g_dir_open(dir, 0, &error);
        g_assert_no_error(error);
        while ((name = g_dir_read_name(d))) {
                g_autofree char *path = g_build_filename(dir, name, NULL);
                g_autofree char *text = NULL;
                g_autoptr(GMatchInfo) m = NULL;

                if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
                        n += scan_dir(path, re, hits);
                        continue;
                }
                g_file_get_contents(path, &text, NULL, &error);
                g_assert_no_error(error);
                n++;
                for (g_regex_match(re, text, 0, &m); g_match_info_matches(m);
                     g_match_info_next(m, NULL)) {
                        int start = 0, line = 1;

                        g_match_info_fetch_pos(m, 0, &start, NULL);
                        for (int i = 0; i < start; i++)
                                line += text[i] == '\n';
                        g_string_append_printf(hits, "%s:%d\n", path, line);
                }
        }
        return n;
}

static void test_no_systemd_include(void) {
        g_autoptr(GRegex) re = systemd_include();
        g_autoptr(GString) hits = g_string_new(NULL);
        guint n = 0;

        /* The pattern finds what it is for (and not a comment that names the header). */
        g_assert_true(g_regex_match(re, "#include <systemd/sd-bus.h>\n", 0, NULL));
        g_assert_true(g_regex_match(re, "x;\n  #  include \"systemd/sd-daemon.h\"\n", 0, NULL));
        g_assert_false(g_regex_match(re, "/* no <systemd/sd-bus.h> here */\n", 0, NULL));

        static const char *const layers[] = { "core", "relay", "varlink" };

        for (size_t i = 0; i < G_N_ELEMENTS(layers); i++) {
                g_autofree char *dir = g_build_filename(arg_source_root, "src", layers[i], NULL);

                n += scan_dir(dir, re, hits);
        }
        g_test_message("%u files read", n);
        g_assert_cmpuint(n, >, 0);
        if (hits->len)
                g_error("systemd includes under src/core, src/relay or src/varlink:\n%s", hits->str);
}

/* nm -u LIB: asserts that it works and lists something, and that no symbol starts with sd_. */
static void assert_no_sd_symbol(const char *lib, const char *some_symbol) {
        g_autofree char *nm = g_find_program_in_path("nm");
        g_autofree char *out = NULL, *err = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GString) bad = g_string_new(NULL);
        g_auto(GStrv) lines = NULL;
        gboolean seen = FALSE;
        int status;

        if (!nm) {
                g_test_skip("nm is not installed (Debian: binutils)");
                return;
        }
        {
                const char *argv[] = { nm, "-u", lib, NULL };

                g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                             &status, &error);
        }
        g_assert_no_error(error);
        g_spawn_check_wait_status(status, &error);
        if (error)
                g_error("nm -u %s: %s\n%s", lib, error->message, err);

        lines = g_strsplit(out, "\n", -1);
        for (size_t i = 0; lines[i]; i++) {
                g_auto(GStrv) f = g_strsplit_set(lines[i], " \t", -1);

                for (size_t j = 0; f[j]; j++) {
                        if (g_str_has_prefix(f[j], "sd_"))
                                g_string_append_printf(bad, "%s\n", lines[i]);
                        if (strcmp(f[j], some_symbol) == 0)
                                seen = TRUE;
                }
        }
        /* An empty listing would pass the check below for nothing. */
        if (!seen)
                g_error("nm -u %s does not list %s:\n%s", lib, some_symbol, out);
        if (bad->len)
                g_error("%s references sd_ symbols:\n%s", lib, bad->str);
}

static void test_core_no_sd_symbol(void) {
        assert_no_sd_symbol(arg_core_lib, "free");
}

static void test_relay_no_sd_symbol(void) {
        assert_no_sd_symbol(arg_relay_lib, "free");
}

static void test_varlink_no_sd_symbol(void) {
        assert_no_sd_symbol(arg_varlink_lib, "free");
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        /* g_test_init() took its own options; the rest are ours. */
        if (argc != 5)
                g_error("Usage: %s SOURCE_ROOT CORE_LIB RELAY_LIB VARLINK_LIB", argv[0]);
        arg_source_root = argv[1];
        arg_core_lib = argv[2];
        arg_relay_lib = argv[3];
        arg_varlink_lib = argv[4];
        g_test_add_func("/layers/no-systemd-include", test_no_systemd_include);
        g_test_add_func("/layers/core-no-sd-symbol", test_core_no_sd_symbol);
        g_test_add_func("/layers/relay-no-sd-symbol", test_relay_no_sd_symbol);
        g_test_add_func("/layers/varlink-no-sd-symbol", test_varlink_no_sd_symbol);
        return g_test_run();
}
