/* What a process uses, read from /proc */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib-proc.h"

gint64 test_proc_rss_kib(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/status", (int) pid);
        g_autofree char *text = NULL;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return -1;
        const char *line = strstr(text, "\nVmRSS:");
        if (!line)
                return -1;
        return g_ascii_strtoll(line + strlen("\nVmRSS:"), NULL, 10);
}

int test_proc_fd_count(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int) pid);
        DIR *dir = opendir(path);
        struct dirent *de;
        int n = 0;

        if (!dir)
                return -1;
        while ((de = readdir(dir)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(dir);
        return n;
}

gint64 test_proc_cpu_ticks(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int) pid);
        g_autofree char *text = NULL;
        unsigned long long utime, stime;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return -1;
        /* The name in parentheses may hold spaces: fields count from the last ')'. State is field
         * 3; utime and stime are fields 14 and 15. */
        const char *p = strrchr(text, ')');
        if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                         &stime) != 2)
                return -1;
        return (gint64) (utime + stime);
}

long test_proc_ticks_per_second(void) {
        return sysconf(_SC_CLK_TCK);
}
