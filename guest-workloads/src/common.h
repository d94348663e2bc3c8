/* Shared by every guest workload: argument parsing, timing, JSON lines, getrusage deltas.
 * Output contract (read by orchestrator/workloads.py): one JSON object per line on stdout,
 * "type" trial | skip | error | interval; exit 0 ok, 1 failed, 2 usage, 3 skipped. */
#ifndef WORKLOAD_COMMON_H
#define WORKLOAD_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_SKIP 3
#define PAGE 4096UL

struct common_opts {
	long trials;
	long warmup;
	long cpu; /* -1: not pinned; else the measuring process (and the children it forks) run there */
};

/* A parsed option table entry: name without dashes, kind, destination. */
enum opt_kind { OPT_LONG, OPT_DOUBLE, OPT_FLAG, OPT_STRING, OPT_SIZE };
struct opt {
	const char *name;
	enum opt_kind kind;
	void *dest;
	int required;
	int seen;
};

extern const char *prog;

void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void parse_args(int argc, char **argv, struct opt *opts, size_t n, struct common_opts *common,
		const char *usage);
void require_range(const char *name, long value, long lo, long hi);
void pin_to_cpu(long cpu);

double now_us(void);

struct usage_snap {
	struct rusage ru;
};
void usage_take(struct usage_snap *s);

/* JSON output: begin a trial line, add params / metrics / info, end it. */
struct jbuf {
	char text[8192];
	size_t len;
	int first_in_obj;
};
void j_begin(struct jbuf *j, const char *type);
void j_str(struct jbuf *j, const char *key, const char *value);
void j_long(struct jbuf *j, const char *key, long value);
void j_double(struct jbuf *j, const char *key, double value);
void j_bool(struct jbuf *j, const char *key, int value);
void j_open(struct jbuf *j, const char *key);
void j_close(struct jbuf *j);
/* a value that is already JSON text (an object built with snprintf) */
void j_json(struct jbuf *j, const char *key, const char *json);
void j_metric(struct jbuf *j, const char *name, double value, const char *unit);
void j_rusage(struct jbuf *j, const struct usage_snap *before, const struct usage_snap *after);
void j_end(struct jbuf *j);

void trial_header(struct jbuf *j, long trial, int warmup);
void emit_note(const char *type, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

long read_long_file(const char *path, long fallback);
long vm_pte_kb(void);
void *map_anon(size_t bytes, size_t align);

#endif
