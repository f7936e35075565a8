/* What a process uses, read from /proc: for tests that show the daemon leaks nothing */
#pragma once

#include <glib.h>
#include <sys/types.h>

/* Resident set size in KiB (VmRSS of /proc/PID/status); -1 when it cannot be read. */
gint64 test_proc_rss_kib(pid_t pid);
/* Open file descriptors (entries of /proc/PID/fd); -1 when it cannot be read. */
int test_proc_fd_count(pid_t pid);
/* CPU time used so far, user plus system, in clock ticks (/proc/PID/stat); -1 on failure. */
gint64 test_proc_cpu_ticks(pid_t pid);
/* Clock ticks per second, for test_proc_cpu_ticks(). */
long test_proc_ticks_per_second(void);
