/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A driver for the fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput once over each
 * file named on the command line, and over each file of a directory named there. Every build
 * runs the seed corpora this way (meson suite 'fuzz'), so a target that crashes on its own
 * seeds fails the suite even where clang is not used.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Inputs larger than this are not seeds; libFuzzer's own default cap is 4096. */
#define FUZZ_MAIN_MAX_INPUT (1024 * 1024)

static int run_file(const char *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -1;
        }
        uint8_t *buf = malloc(FUZZ_MAIN_MAX_INPUT);
        if (!buf) {
                close(fd);
                fprintf(stderr, "out of memory\n");
                return -1;
        }
        size_t size = 0;
        for (;;) {
                ssize_t n = read(fd, buf + size, FUZZ_MAIN_MAX_INPUT - size);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        fprintf(stderr, "%s: %s\n", path, strerror(errno));
                        free(buf);
                        close(fd);
                        return -1;
                }
                if (n == 0 || (size += (size_t) n) == FUZZ_MAIN_MAX_INPUT)
                        break;
        }
        close(fd);
        /* A copy of exactly the input's size, so an overread is caught by ASan or valgrind. */
        uint8_t *exact = malloc(size ? size : 1);
        if (!exact) {
                free(buf);
                fprintf(stderr, "out of memory\n");
                return -1;
        }
        memcpy(exact, buf, size);
        free(buf);
        LLVMFuzzerTestOneInput(exact, size);
        free(exact);
        printf("ran %s (%zu bytes)\n", path, size);
        return 0;
}

static int run_path(const char *path, unsigned *count) {
        struct stat st;
        if (stat(path, &st) < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -1;
        }
        if (!S_ISDIR(st.st_mode)) {
                (*count)++;
                return run_file(path);
        }
        struct dirent **names = NULL;
        int n = scandir(path, &names, NULL, alphasort);
        if (n < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -1;
        }
        int r = 0;
        for (int i = 0; i < n; i++) {
                if (names[i]->d_name[0] != '.' && r == 0) {
                        char *p = NULL;
                        if (asprintf(&p, "%s/%s", path, names[i]->d_name) < 0) {
                                r = -1;
                        } else {
                                r = run_path(p, count);
                                free(p);
                        }
                }
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char **argv) {
        if (LLVMFuzzerInitialize)
                LLVMFuzzerInitialize(&argc, &argv);
        unsigned count = 0;
        for (int i = 1; i < argc; i++)
                if (run_path(argv[i], &count) < 0)
                        return EXIT_FAILURE;
        if (count == 0) {
                fprintf(stderr, "no inputs\n");
                return EXIT_FAILURE;
        }
        printf("%u inputs, no crash\n", count);
        return EXIT_SUCCESS;
}
