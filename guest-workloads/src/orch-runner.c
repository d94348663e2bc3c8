/* orch-runner: runs the harness's commands one at a time on one SSH channel, each killed with
 * its whole process group at its deadline, without a `timeout` process per command (issue #21:
 * that fork+exec was the largest part of an empty trial's cost). The client side and the
 * shell fallback that speaks the older protocol are in orchestrator/guests/runner.py.
 *
 * Started as `orch-runner NONCE`: answers "NONCE 1\n" on stdout and "NONCE\n" on stderr
 * (protocol 1: argv requests). Then, per command:
 *   request:  "NONCE MILLISECONDS LENGTH\n" and LENGTH bytes: the argv, each NUL-terminated
 *   reply:    the command's own output (its stdout and stderr are ours), then "NONCE STATUS\n"
 *             on stdout and "NONCE\n" on stderr; STATUS is the exit status, or 128 + N for a
 *             death by signal N (as a shell says it), 137 for the kill at the deadline.
 * The command runs with stdin from /dev/null, in a process group of its own, so the kill
 * reaches whatever it started. EOF on stdin ends the runner. `orch-runner --version` only
 * proves the binary runs here (the shell fallback checks before it execs us).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQUEST (1 << 20)
#define MAX_ARGS 4096

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void say(int fd, const char *nonce, const char *tail)
{
	char line[128];
	int n = snprintf(line, sizeof line, "%s%s\n", nonce, tail);
	if (write(fd, line, (size_t)n) != n)
		exit(3); /* the channel is gone */
}

/* posix_spawn (a vfork underneath): no copy of our page tables per command. The command gets
 * stdin from /dev/null, a process group of its own, and our signal mask as it was. */
static pid_t spawn(char **argv, const sigset_t *unblocked)
{
	extern char **environ;
	posix_spawn_file_actions_t files;
	posix_spawnattr_t attr;
	pid_t pid = -1;
	posix_spawn_file_actions_init(&files);
	posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setsigmask(&attr, unblocked);
	int err = posix_spawnp(&pid, argv[0], &files, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&files);
	if (err) {
		dprintf(2, "orch-runner: %s: %s\n", argv[0], strerror(err));
		return err == ENOENT ? -127 : -126;
	}
	return pid;
}

/* Waits for pid until deadline (ms on CLOCK_MONOTONIC), then kills its process group. */
static int wait_or_kill(pid_t pid, double deadline, const sigset_t *chld)
{
	int status;
	int killed = 0;
	for (;;) {
		pid_t got = waitpid(pid, &status, killed ? 0 : WNOHANG);
		if (got == pid)
			break;
		if (got < 0 && errno != EINTR)
			return 126;
		if (got != 0)
			continue;
		double left = deadline - now_ms();
		if (left <= 0) {
			kill(-pid, SIGKILL); /* its group: what it started dies with it */
			killed = 1;
			continue;
		}
		struct timespec wait = {(time_t)(left / 1e3), (long)((left - (long)(left / 1e3) * 1e3) * 1e6)};
		sigtimedwait(chld, NULL, &wait); /* any child's exit, or the deadline */
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* Splits LENGTH bytes of NUL-terminated words into argv; 0 on a malformed request. */
static int split_argv(char *body, long length, char **argv)
{
	int n = 0;
	if (length == 0 || body[length - 1] != '\0')
		return 0;
	for (char *at = body; at < body + length; at += strlen(at) + 1) {
		if (n == MAX_ARGS - 1)
			return 0;
		argv[n++] = at;
	}
	argv[n] = NULL;
	return n;
}

static int run_one(const char *header, const sigset_t *chld, const sigset_t *unblocked)
{
	static char body[MAX_REQUEST];
	static char *argv[MAX_ARGS];
	char nonce[65];
	long ms, length;
	if (sscanf(header, "%64s %ld %ld", nonce, &ms, &length) != 3 || ms <= 0 || length <= 0
	    || length > MAX_REQUEST || fread(body, 1, (size_t)length, stdin) != (size_t)length
	    || !split_argv(body, length, argv)) {
		dprintf(2, "orch-runner: malformed request\n");
		return 0;
	}
	double deadline = now_ms() + (double)ms;
	pid_t pid = spawn(argv, unblocked);
	int status = pid > 0 ? wait_or_kill(pid, deadline, chld) : -pid;
	char tail[16];
	snprintf(tail, sizeof tail, " %d", status);
	say(1, nonce, tail);
	say(2, nonce, "");
	return 1;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		puts("orch-runner 1");
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: orch-runner NONCE (started by the harness, see runner.py)\n");
		return 2;
	}
	sigset_t chld, unblocked;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &unblocked);
	say(1, argv[1], " 1");
	say(2, argv[1], "");
	char header[256];
	while (fgets(header, sizeof header, stdin))
		if (!run_one(header, &chld, &unblocked))
			return 2;
	return 0;
}
