#include "common.h"

#include <errno.h>
#include <sched.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

const char *prog = "workload";

void usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: error: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (hint: %s --help)\n", prog);
	exit(EXIT_USAGE);
}

static long parse_long(const char *name, const char *text)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	if (errno || end == text || *end)
		usage_error("--%s needs a whole number, got '%s'", name, text);
	return v;
}

static double parse_double(const char *name, const char *text)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno || end == text || *end)
		usage_error("--%s needs a number, got '%s'", name, text);
	return v;
}

/* 64M, 2G, 4096, 512K: binary multiples, as the orchestrator passes plain bytes anyway. */
static long parse_size(const char *name, const char *text)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	long mult = 1;
	if (errno || end == text || v < 0)
		usage_error("--%s needs a size like 64M or 1G, got '%s'", name, text);
	switch (*end) {
	case '\0': break;
	case 'K': case 'k': mult = 1L << 10; end++; break;
	case 'M': case 'm': mult = 1L << 20; end++; break;
	case 'G': case 'g': mult = 1L << 30; end++; break;
	default: usage_error("--%s: unknown size suffix in '%s'", name, text);
	}
	if (*end)
		usage_error("--%s: trailing characters in '%s'", name, text);
	if (v > LONG_MAX / mult)
		usage_error("--%s: '%s' is too large", name, text);
	return v * mult;
}

static void store(struct opt *o, const char *value)
{
	switch (o->kind) {
	case OPT_LONG: *(long *)o->dest = parse_long(o->name, value); break;
	case OPT_DOUBLE: *(double *)o->dest = parse_double(o->name, value); break;
	case OPT_STRING: *(const char **)o->dest = value; break;
	case OPT_SIZE: *(long *)o->dest = parse_size(o->name, value); break;
	case OPT_FLAG: *(int *)o->dest = 1; break;
	}
	o->seen = 1;
}

static struct opt *find(struct opt *opts, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(opts[i].name, name) == 0)
			return &opts[i];
	return NULL;
}

void parse_args(int argc, char **argv, struct opt *opts, size_t n, struct common_opts *common,
		const char *usage)
{
	common->trials = 1;
	common->warmup = 0;
	common->cpu = -1;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			printf("usage: %s %s [--trials N] [--warmup W] [--cpu C]\n", prog, usage);
			exit(0);
		}
		if (strncmp(arg, "--", 2) != 0)
			usage_error("unexpected argument '%s'", arg);
		const char *name = arg + 2;
		struct opt *o = find(opts, n, name);
		int is_common = strcmp(name, "trials") == 0 || strcmp(name, "warmup") == 0 ||
				strcmp(name, "cpu") == 0;
		if (!o && !is_common)
			usage_error("unknown option '%s'", arg);
		if (o && o->kind == OPT_FLAG) {
			store(o, "");
			continue;
		}
		if (i + 1 >= argc)
			usage_error("%s needs a value", arg);
		const char *value = argv[++i];
		if (is_common) {
			long v = parse_long(name, value);
			if (name[0] == 't') common->trials = v;
			else if (name[0] == 'w') common->warmup = v;
			else common->cpu = v;
		} else {
			store(o, value);
		}
	}
	for (size_t i = 0; i < n; i++)
		if (opts[i].required && !opts[i].seen)
			usage_error("--%s is required", opts[i].name);
	require_range("trials", common->trials, 1, 1000000);
	require_range("warmup", common->warmup, 0, 1000000);
	if (common->cpu >= 0)
		pin_to_cpu(common->cpu);
}

/* Pinning keeps the parent and its forked child on one known CPU, so a migration between
 * CPUs (and its cache refill) is not part of what is timed. */
void pin_to_cpu(long cpu)
{
	cpu_set_t set;
	require_range("cpu", cpu, 0, CPU_SETSIZE - 1);
	CPU_ZERO(&set);
	CPU_SET((int)cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		usage_error("--cpu %ld: cannot run there (%s)", cpu, strerror(errno));
}

void require_range(const char *name, long value, long lo, long hi)
{
	if (value < lo || value > hi)
		usage_error("--%s must be between %ld and %ld, got %ld", name, lo, hi, value);
}

double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

void usage_take(struct usage_snap *s)
{
	getrusage(RUSAGE_SELF, &s->ru);
}

static void j_raw(struct jbuf *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void j_raw(struct jbuf *j, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(j->text + j->len, sizeof(j->text) - j->len, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof(j->text) - j->len)
		j->len += (size_t)n;
}

static void j_key(struct jbuf *j, const char *key)
{
	j_raw(j, "%s\"%s\":", j->first_in_obj ? "" : ",", key);
	j->first_in_obj = 0;
}

static void j_escaped(struct jbuf *j, const char *s)
{
	j_raw(j, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			j_raw(j, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			j_raw(j, "\\u%04x", *s);
		else
			j_raw(j, "%c", *s);
	}
	j_raw(j, "\"");
}

void j_begin(struct jbuf *j, const char *type)
{
	j->len = 0;
	j->first_in_obj = 1;
	j_raw(j, "{");
	j_str(j, "type", type);
	j_str(j, "workload", prog);
}

void j_str(struct jbuf *j, const char *key, const char *value)
{
	j_key(j, key);
	j_escaped(j, value);
}

void j_long(struct jbuf *j, const char *key, long value)
{
	j_key(j, key);
	j_raw(j, "%ld", value);
}

void j_double(struct jbuf *j, const char *key, double value)
{
	j_key(j, key);
	j_raw(j, "%.9g", value);
}

void j_bool(struct jbuf *j, const char *key, int value)
{
	j_key(j, key);
	j_raw(j, "%s", value ? "true" : "false");
}

void j_open(struct jbuf *j, const char *key)
{
	j_key(j, key);
	j_raw(j, "{");
	j->first_in_obj = 1;
}

void j_close(struct jbuf *j)
{
	j_raw(j, "}");
	j->first_in_obj = 0;
}

void j_json(struct jbuf *j, const char *key, const char *json)
{
	j_key(j, key);
	j_raw(j, "%s", json);
}

void j_metric(struct jbuf *j, const char *name, double value, const char *unit)
{
	j_open(j, name);
	j_double(j, "value", value);
	j_str(j, "unit", unit);
	j_close(j);
}

static double tv_us(struct timeval tv)
{
	return (double)tv.tv_sec * 1e6 + (double)tv.tv_usec;
}

void j_rusage(struct jbuf *j, const struct usage_snap *b, const struct usage_snap *a)
{
	j_open(j, "rusage");
	j_long(j, "minflt", a->ru.ru_minflt - b->ru.ru_minflt);
	j_long(j, "majflt", a->ru.ru_majflt - b->ru.ru_majflt);
	j_long(j, "nvcsw", a->ru.ru_nvcsw - b->ru.ru_nvcsw);
	j_long(j, "nivcsw", a->ru.ru_nivcsw - b->ru.ru_nivcsw);
	j_double(j, "utime_us", tv_us(a->ru.ru_utime) - tv_us(b->ru.ru_utime));
	j_double(j, "stime_us", tv_us(a->ru.ru_stime) - tv_us(b->ru.ru_stime));
	j_close(j);
}

void j_end(struct jbuf *j)
{
	j_raw(j, "}");
	printf("%.*s\n", (int)j->len, j->text);
	fflush(stdout);
}

void trial_header(struct jbuf *j, long trial, int warmup)
{
	j_begin(j, "trial");
	j_long(j, "trial", trial);
	j_bool(j, "warmup", warmup);
	j_str(j, "clock", "CLOCK_MONOTONIC");
}

void emit_note(const char *type, const char *fmt, ...)
{
	char reason[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	struct jbuf j;
	j_begin(&j, type);
	j_str(&j, "reason", reason);
	j_end(&j);
	fprintf(stderr, "%s: %s: %s\n", prog, type, reason);
}

long read_long_file(const char *path, long fallback)
{
	FILE *f = fopen(path, "r");
	long v;
	if (!f)
		return fallback;
	if (fscanf(f, "%ld", &v) != 1)
		v = fallback;
	fclose(f);
	return v;
}

long vm_pte_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPTE: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Anonymous private memory (MAP_NORESERVE: sparse layouts span far more than they touch) aligned to `align` (a power of two), by over-mapping and trimming. */
void *map_anon(size_t bytes, size_t align)
{
	size_t total = bytes + align;
	char *raw = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	uintptr_t start = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
	char *aligned = (char *)start;
	if (aligned > raw)
		munmap(raw, (size_t)(aligned - raw));
	size_t tail = (size_t)((raw + total) - (aligned + bytes));
	if (tail)
		munmap(aligned + bytes, tail);
	return aligned;
}
