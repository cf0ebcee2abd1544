/* The benchmark's target: tiny, compiled at bench time (gcc -O2, static when it can).
 *
 * Its first act in main() is to read CLOCK_MONOTONIC and write "S <pid> <ns>" to the stamp
 * file or FIFO named in argv[2], so the bench measures up to the first instruction of the
 * successor, not up to some later sign of life. Stamps are one write() of < PIPE_BUF bytes,
 * opened O_NONBLOCK: a full or unread FIFO never blocks the target.
 *
 *   target stamp PATH        stamp, then wait: SIGUSR1 -> stamp "E", exit 0 (a normal exit
 *                            at a moment the bench chooses); SIGTERM -> exit 0
 *   target crash PATH        stamp, exit 1 at once (a crash loop)
 *   target lines PATH N      stamp "S"; wait for SIGUSR1; write N lines of 100 bytes to
 *                            stdout (99 characters and a newline, the last one ending in
 *                            END-OF-RELAY) in 64 KiB writes; stamp "E"; wait for SIGTERM
 *   target stdio PATH N      the same lines, written as a busy program logs: one fwrite
 *                            per line through stdio with a 64 KiB buffer (so the writes
 *                            are 64 KiB and cut lines anywhere), as fast as it can
 *
 * PATH "-" means no stamps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *stamp_path = "-";

static void stamp(char kind, long long ns) {
    if (stamp_path[0] == '-' && stamp_path[1] == 0) return;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%c %d %lld\n", kind, (int)getpid(), ns);
    int fd = open(stamp_path, O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t ignored = write(fd, buf, (size_t)n);
    (void)ignored;
    close(fd);
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_usr1(int sig) {
    (void)sig;
    stamp('E', now_ns());
    _exit(0);
}

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int lines(long long count) {
    sigset_t set;  /* SIGUSR1 was blocked in main(), before the stamp */
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    int sig;
    sigwait(&set, &sig);
    enum { LINE = 100, PER_WRITE = 655 };
    static char buf[LINE * PER_WRITE];
    long long i = 0;
    while (i < count) {
        size_t used = 0;
        for (int k = 0; k < PER_WRITE && i < count; k++, i++) {
            char *line = buf + used;
            memset(line, 'x', LINE - 1);
            char head[24];
            int h = snprintf(head, sizeof head, "%010lld ", i);
            memcpy(line, head, (size_t)h);
            if (i == count - 1) memcpy(line + LINE - 1 - 12, "END-OF-RELAY", 12);
            line[LINE - 1] = '\n';
            used += LINE;
        }
        if (write_all(1, buf, used) < 0) return 2;
    }
    stamp('E', now_ns());
    for (;;) pause();
}

/* The index of each line counted in its ten digits as an odometer: no printf per line,
 * which would cost the writer more than the relay it measures. */
static int stdio_lines(long long count) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    int sig;
    sigwait(&set, &sig);
    static char vbuf[64 * 1024];
    setvbuf(stdout, vbuf, _IOFBF, sizeof vbuf);
    enum { LINE = 100 };
    char line[LINE];
    memset(line, 'x', LINE - 1);
    memset(line, '0', 10);
    line[10] = ' ';
    line[LINE - 1] = '\n';
    for (long long i = 0; i < count; i++) {
        if (i == count - 1) memcpy(line + LINE - 1 - 12, "END-OF-RELAY", 12);
        if (fwrite(line, 1, LINE, stdout) != LINE) return 2;
        for (int d = 9; d >= 0; d--) {
            if (line[d] != '9') { line[d]++; break; }
            line[d] = '0';
        }
    }
    if (fflush(stdout) != 0) return 2;
    stamp('E', now_ns());
    for (;;) pause();
}

int main(int argc, char **argv) {
    long long t = now_ns();
    if (argc < 3) {
        fprintf(stderr, "usage: target stamp|crash|lines|stdio PATH [N]\n");
        return 2;
    }
    stamp_path = argv[2];
    signal(SIGTERM, on_term);
    if (strcmp(argv[1], "crash") == 0) {
        stamp('S', t);
        _exit(1);
    }
    if (strcmp(argv[1], "lines") == 0 || strcmp(argv[1], "stdio") == 0) {
        sigset_t set;  /* before the stamp: the bench may signal as soon as it sees it */
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        sigprocmask(SIG_BLOCK, &set, NULL);
        stamp('S', t);
        long long n = argc > 3 ? atoll(argv[3]) : 0;
        return argv[1][0] == 'l' ? lines(n) : stdio_lines(n);
    }
    signal(SIGUSR1, on_usr1);
    stamp('S', t);
    for (;;) pause();
}
