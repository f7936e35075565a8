/* Fuzzes the state-file reader: arbitrary text restored into a fresh manager
 *
 * The input is the whole state file. It is restored with manager_restore_state_text() (what
 * manager_restore_state() runs on the file's bytes), in a network namespace of the target's own
 * so that the ports it names are really bound. What was restored must be valid: every sandbox
 * id passes sandbox_id_is_valid(), every sandbox has a guest address, every port has host and
 * guest ports in 1..65535, a serial, options within their limits, and the tables' counts agree
 * with what the iterators walk. Then the restored tables are written out as the daemon writes
 * them and read back into a second manager, which must restore exactly as much: what the
 * daemon writes, it reads. */
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz-util.h"
#include "manager-internal.h"

static struct ev_loop *loop;
static LocalAuthorizer authorizer;
static char state_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        fuzz_enter_network_namespace();
        fuzz_quiet_logs();
        loop = ev_default_loop(EVFLAG_AUTO);
        fuzz_require(loop);
        local_authorizer_init(&authorizer, true);
        /* tmpfs: the daemon fsyncs what it writes. */
        (void) snprintf(state_path, sizeof state_path, "/dev/shm/fuzz-state-%d", (int) getpid());
        return 0;
}

static char *read_all(const char *path, size_t *ret_size) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t n = 0;

        fuzz_require(f);
        for (;;) {
                char *t = realloc(buf, n + 65536);

                fuzz_require(t);
                buf = t;
                size_t k = fread(buf + n, 1, 65536, f);
                n += k;
                if (k == 0)
                        break;
        }
        fclose(f);
        *ret_size = n;
        return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint32_t n_sandboxes, n_ports;
        Manager *m = NULL, *again = NULL;
        char why[256] = "";
        size_t saved_size;
        char *saved;
        int r;

        r = manager_new(&m, loop);
        fuzz_require(r == 0);
        manager_set_authorizer(m, &authorizer.authorizer);
        r = manager_restore_state_text(m, (const char *) data, size, why, sizeof why);
        fuzz_require(r >= 0);
        if (r > 0) {
                /* Unusable as a whole: nothing at all was restored. */
                fuzz_require(why[0]);
                fuzz_require(manager_n_sandboxes(m) == 0 && manager_n_ports(m) == 0);
                manager_free(m);
                return 0;
        }
        n_ports = fuzz_check_manager(m);
        n_sandboxes = manager_n_sandboxes(m);

        /* Round trip: written as the daemon writes it, read back as the daemon reads it. */
        r = manager_set_state_file(m, state_path);
        fuzz_require(r == 0);
        r = manager_save_state(m);
        fuzz_require(r == 0);
        manager_free(m);
        saved = read_all(state_path, &saved_size);
        (void) unlink(state_path);

        r = manager_new(&again, loop);
        fuzz_require(r == 0);
        manager_set_authorizer(again, &authorizer.authorizer);
        r = manager_restore_state_text(again, saved, saved_size, why, sizeof why);
        if (r != 0)
                fprintf(stderr, "The daemon cannot read back what it wrote (%s):\n%.*s\n", why,
                        (int) saved_size, saved);
        fuzz_require(r == 0);
        fuzz_require(fuzz_check_manager(again) == n_ports);
        fuzz_require(manager_n_sandboxes(again) == n_sandboxes);
        manager_free(again);
        free(saved);
        return 0;
}
