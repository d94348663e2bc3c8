/* fault: demand faults over N pages, one PTE per fault, against the "populate many PTEs at
 * once" comparators (MAP_POPULATE, MADV_POPULATE_*, MADV_WILLNEED); anonymous or file-backed
 * with a warm or cold page cache; sequential or seeded-random touch order. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

struct cfg {
	long pages, seed;
	int file, cold, random;
	const char *populate, *dir;
	int fd;
	long *order;
};

static int one_of(const char *value, const char *a, const char *b, const char *what)
{
	if (strcmp(value, a) == 0)
		return 0;
	if (strcmp(value, b) == 0)
		return 1;
	usage_error("--%s must be %s or %s, got '%s'", what, a, b, value);
}

static void shuffle(long *order, long n, long seed)
{
	unsigned long x = (unsigned long)seed * 2654435761UL + 1; /* xorshift: reproducible */
	for (long i = 0; i < n; i++)
		order[i] = i;
	for (long i = n - 1; i > 0; i--) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		long k = (long)(x % (unsigned long)(i + 1));
		long tmp = order[i];
		order[i] = order[k], order[k] = tmp;
	}
}

static int make_file(struct cfg *c)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/fault-XXXXXX", c->dir);
	c->fd = mkstemp(path);
	if (c->fd < 0)
		return -1;
	unlink(path); /* gone when we exit, however we exit */
	char buf[PAGE];
	memset(buf, 1, sizeof(buf));
	for (long i = 0; i < c->pages; i++)
		if (write(c->fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			return -1;
	return fsync(c->fd);
}

static void set_cache(const struct cfg *c)
{
	if (c->cold) {
		posix_fadvise(c->fd, 0, 0, POSIX_FADV_DONTNEED);
		return;
	}
	char buf[PAGE];
	for (long i = 0; i < c->pages; i++)
		if (pread(c->fd, buf, sizeof(buf), i * (long)PAGE) < 0)
			break;
}

static char *map_it(const struct cfg *c, int populate_flag)
{
	size_t len = (size_t)c->pages * PAGE;
	int flags = MAP_PRIVATE | (populate_flag ? MAP_POPULATE : 0);
	void *p = c->file ? mmap(NULL, len, PROT_READ | PROT_WRITE, flags, c->fd, 0)
			  : mmap(NULL, len, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED && !c->file)
		madvise(p, len, MADV_NOHUGEPAGE); /* one 4 KiB PTE per fault is what we count */
	return p == MAP_FAILED ? NULL : p;
}

/* The populate step; returns 0, or an errno when the kernel lacks the advice. */
static int populate(const struct cfg *c, char *p)
{
	size_t len = (size_t)c->pages * PAGE;
	if (strcmp(c->populate, "madv-populate-write") == 0) {
		/* file pages are read by the touch loop: populate them readable, not COW-copied */
		int advice = c->file ? MADV_POPULATE_READ : MADV_POPULATE_WRITE;
		return madvise(p, len, advice) ? errno : 0;
	}
	if (strcmp(c->populate, "madv-willneed") == 0)
		return madvise(p, len, MADV_WILLNEED) ? errno : 0;
	return 0;
}

static long touch(const struct cfg *c, char *p)
{
	long sum = 0;
	for (long i = 0; i < c->pages; i++) {
		long idx = c->random ? c->order[i] : i;
		if (c->file)
			sum += *(volatile char *)(p + idx * (long)PAGE);
		else
			*(volatile char *)(p + idx * (long)PAGE) = (char)i;
	}
	return sum;
}

static int one_trial(struct cfg *c, long t, int warmup, const char *params)
{
	struct usage_snap b0, b1, b2;
	struct jbuf j;
	if (c->file)
		set_cache(c);
	int map_populate = strcmp(c->populate, "map-populate") == 0;
	double t0 = now_us();
	char *p = map_it(c, map_populate);
	if (!p) {
		emit_note("error", "mmap of %ld pages failed: %s", c->pages, strerror(errno));
		return EXIT_FAILED;
	}
	int err = populate(c, p);
	if (err) {
		emit_note("skip", "populate %s not supported here: %s", c->populate, strerror(err));
		return EXIT_SKIP;
	}
	double t1 = now_us();
	usage_take(&b0);
	usage_take(&b1);
	double t2 = now_us();
	touch(c, p);
	double t3 = now_us();
	usage_take(&b2);
	munmap(p, (size_t)c->pages * PAGE);
	trial_header(&j, t, warmup);
	j_json(&j, "params", params);
	j_open(&j, "metrics");
	j_metric(&j, "populate_us", t1 - t0, "us");
	j_metric(&j, "touch_us", t3 - t2, "us");
	j_metric(&j, "ns_per_page", ((t1 - t0) + (t3 - t2)) * 1e3 / (double)c->pages, "ns");
	j_metric(&j, "minflt", (double)(b2.ru.ru_minflt - b1.ru.ru_minflt), "count");
	j_metric(&j, "majflt", (double)(b2.ru.ru_majflt - b1.ru.ru_majflt), "count");
	j_close(&j);
	j_rusage(&j, &b0, &b2);
	j_json(&j, "info", "{}");
	j_end(&j);
	return 0;
}

int main(int argc, char **argv)
{
	struct common_opts common;
	const char *backing = "anon", *cache = "warm", *order = "seq";
	struct cfg c = {0, 1, 0, 0, 0, "none", "/var/tmp", -1, NULL};
	struct opt opts[] = {
		{"pages", OPT_LONG, &c.pages, 1, 0}, {"backing", OPT_STRING, &backing, 0, 0},
		{"cache", OPT_STRING, &cache, 0, 0}, {"order", OPT_STRING, &order, 0, 0},
		{"populate", OPT_STRING, &c.populate, 0, 0}, {"dir", OPT_STRING, &c.dir, 0, 0},
		{"seed", OPT_LONG, &c.seed, 0, 0},
	};
	prog = "fault";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, opts, 7, &common,
		   "--pages N [--backing anon|file] [--cache warm|cold] [--order seq|random] "
		   "[--populate none|map-populate|madv-populate-write|madv-willneed] [--dir PATH] "
		   "[--seed S]");
	require_range("pages", c.pages, 1, 1L << 26);
	c.file = one_of(backing, "anon", "file", "backing");
	c.cold = one_of(cache, "warm", "cold", "cache");
	c.random = one_of(order, "seq", "random", "order");
	if (strcmp(c.populate, "none") && strcmp(c.populate, "map-populate") &&
	    strcmp(c.populate, "madv-populate-write") && strcmp(c.populate, "madv-willneed"))
		usage_error("--populate must be none, map-populate, madv-populate-write or "
			    "madv-willneed, got '%s'", c.populate);
	if (c.file && make_file(&c) != 0) {
		emit_note("error", "cannot create a %ld-page file in %s: %s", c.pages, c.dir,
			  strerror(errno));
		return EXIT_FAILED;
	}
	c.order = malloc((size_t)c.pages * sizeof(long));
	if (!c.order)
		return EXIT_FAILED;
	shuffle(c.order, c.pages, c.seed);
	char params[320];
	snprintf(params, sizeof(params),
		 "{\"pages\":%ld,\"backing\":\"%s\",\"cache\":\"%s\",\"order\":\"%s\","
		 "\"populate\":\"%s\",\"seed\":%ld}",
		 c.pages, backing, cache, order, c.populate, c.seed);
	for (long t = 0; t < common.warmup + common.trials; t++) {
		int rc = one_trial(&c, t, t < common.warmup, params);
		if (rc)
			return rc;
	}
	return 0;
}
