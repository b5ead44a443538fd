/* train/teacher_cache.c — the teacher's hidden states of training windows in an
 * unlinked file (see teacher_cache.h). */
#include "teacher_cache.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Free bytes of the file system that holds fd, or -1 with errno. */
static double free_bytes(int fd) {
    struct statvfs vfs;
    if (fstatvfs(fd, &vfs) != 0) return -1;
    return (double)vfs.f_bavail * (double)vfs.f_frsize;
}

int teacher_cache_open(TeacherCache *c, const char *dir, double max_bytes, double reserve_bytes, int64_t n_windows,
                       int64_t max_windows, int n_slots, int T, int d, NptErr *err) {
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->n_slots = n_slots, c->T = T, c->d = d, c->n_windows = n_windows, c->reserve_bytes = reserve_bytes;
    c->record_bytes = (size_t)n_slots * T * d * sizeof(float);
    double records = floor(max_bytes / (double)c->record_bytes);
    if (records < 1)
        return npt_fail(err, "teacher cache: %.3g MB holds no window (one takes %.2f MB): raise it or set it to 0 (off)",
                        max_bytes / 1e6, c->record_bytes / 1e6);
    if (records > (double)max_windows) records = (double)max_windows;
    if (records > INT32_MAX / 2) records = INT32_MAX / 2; /* the index has twice as many slots */
    c->max_records = (int32_t)records;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/.npt-teacher-cache.XXXXXX", dir) >= (int)sizeof path)
        return npt_fail(err, "teacher cache: directory path too long: '%s'", dir);
    c->fd = mkstemp(path);
    if (c->fd < 0) return npt_fail(err, "teacher cache: cannot create a file in '%s': %s", dir, strerror(errno));
    /* unlinked now: nothing to clean up after a crash, nothing stale for a later run */
    if (unlink(path) != 0) {
        int e = errno;
        teacher_cache_close(c);
        return npt_fail(err, "teacher cache: cannot unlink '%s': %s", path, strerror(e));
    }
    /* the same measure new_record applies as the file grows */
    double need = (double)c->max_records * c->record_bytes, avail = free_bytes(c->fd);
    if (avail < need + reserve_bytes) {
        int e = errno;
        teacher_cache_close(c);
        if (avail < 0) return npt_fail(err, "teacher cache: cannot measure the free space in '%s': %s", dir, strerror(e));
        return npt_fail(err, "teacher cache: '%s' has %.3g GB free, the cache may take %.3g GB and %.3g GB stay free for "
                        "checkpoints: lower it or free space", dir, avail / 1e9, need / 1e9, reserve_bytes / 1e9);
    }
    /* open addressing at most half full: a lookup probes about 1.5 slots */
    uint64_t slots = 2;
    while (slots < 2 * (uint64_t)c->max_records) slots *= 2;
    c->mask = slots - 1;
    c->slot_window = npt_try_malloc(slots * sizeof(int64_t), "teacher cache index", err);
    c->slot_record = c->slot_window ? npt_try_malloc(slots * sizeof(int32_t), "teacher cache index", err) : NULL;
    c->ready = c->slot_record ? npt_try_malloc((size_t)c->max_records, "teacher cache flags", err) : NULL;
    if (!c->ready) {
        teacher_cache_close(c);
        return -1;
    }
    for (uint64_t i = 0; i < slots; i++) c->slot_window[i] = -1;
    memset(c->ready, 0, (size_t)c->max_records);
    return 0;
}

void teacher_cache_close(TeacherCache *c) {
    if (c->fd >= 0) close(c->fd);
    free(c->slot_window);
    free(c->slot_record);
    free(c->ready);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

void teacher_cache_release(TeacherCache *c) {
    if (!c->failed || c->fd < 0) return;
    close(c->fd);
    c->fd = -1;
}

int32_t teacher_cache_stored(const TeacherCache *c) {
    int32_t n = 0;
    for (int32_t r = 0; r < c->n_records; r++) n += c->ready[r];
    return n;
}

/* The index slot of window w: its own, or the empty one where it would go. */
static uint64_t index_slot(const TeacherCache *c, int64_t w) {
    uint64_t i = (((uint64_t)w * 0x9E3779B97F4A7C15ull) >> 17) & c->mask;
    while (c->slot_window[i] != -1 && c->slot_window[i] != w) i = (i + 1) & c->mask;
    return i;
}

static int32_t record_of(const TeacherCache *c, int64_t w) {
    uint64_t i = index_slot(c, w);
    return c->slot_window[i] == w ? c->slot_record[i] : -1;
}

/* A new record for window w, if one is left and the file system keeps the reserve free
 * with it and the `pending` records handed out in this plan but not written yet. *avail:
 * the file system's free bytes, asked once per plan (NAN until then): the file does not
 * grow while a plan is made, its pending records are counted instead. */
static int32_t new_record(TeacherCache *c, int64_t w, int pending, double *avail) {
    if (c->full || c->n_records >= c->max_records) return -1;
    if (isnan(*avail)) *avail = free_bytes(c->fd);
    if (*avail < c->reserve_bytes + (double)(pending + 1) * (double)c->record_bytes) {
        c->full = 1;
        return -1;
    }
    uint64_t i = index_slot(c, w);
    c->slot_window[i] = w;
    return c->slot_record[i] = c->n_records++;
}

static int seen_earlier(const int64_t *ids, int b) {
    for (int i = 0; i < b; i++)
        if (ids[i] == ids[b]) return 1;
    return 0;
}

void teacher_cache_plan(TeacherCache *c, const int64_t *window_ids, int B, CacheAction *actions) {
    int pending = 0;
    double avail = NAN;
    for (int b = 0; b < B; b++) {
        int64_t w = window_ids[b];
        actions[b] = CACHE_OFF;
        if (c->failed || w < 0 || w >= c->n_windows) {
            c->misses++;
            continue;
        }
        int32_t rec = record_of(c, w);
        if (rec >= 0 && c->ready[rec]) {
            actions[b] = CACHE_HIT, c->hits++;
            continue;
        }
        c->misses++;
        if (seen_earlier(window_ids, b)) continue; /* its first copy stores it */
        if (rec < 0 && (rec = new_record(c, w, pending, &avail)) >= 0) pending++;
        if (rec >= 0) actions[b] = CACHE_STORE; /* new, or a write refused earlier */
    }
}

/* The first failure turns the cache off; shards may fail at the same time. */
static void cache_fail(TeacherCache *c, const char *what, int64_t window, int e) {
#pragma omp critical(teacher_cache_fail)
    if (!c->failed) {
        c->failed = 1;
        snprintf(c->last_error, sizeof c->last_error, "teacher cache: %s of window %lld failed (%s); caching stops, the teacher is recomputed",
                 what, (long long)window, e ? strerror(e) : "short transfer");
    }
}

/* pread/pwrite of one block, over partial transfers; errno-style result (0 = done). */
static int transfer(int fd, void *buf, size_t n, off_t off, int write) {
    char *p = buf;
    while (n > 0) {
        ssize_t k = write ? pwrite(fd, p, n, off) : pread(fd, p, n, off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return errno;
        if (k == 0) return EIO; /* read past the end: the record was never written */
        p += k, n -= (size_t)k, off += k;
    }
    return 0;
}

static int record_transfer(TeacherCache *c, int32_t rec, float *const *blocks, int write) {
    size_t block = c->record_bytes / (size_t)c->n_slots;
    off_t base = (off_t)rec * (off_t)c->record_bytes;
    for (int s = 0; s < c->n_slots; s++) {
        int e = transfer(c->fd, blocks[s], block, base + (off_t)s * (off_t)block, write);
        if (e) return e;
    }
    return 0;
}

int teacher_cache_read(TeacherCache *c, int64_t window, float *const *blocks) {
    int32_t rec = record_of(c, window);
    int e = record_transfer(c, rec, blocks, 0);
    if (!e) return 0;
    c->ready[rec] = 0;
    cache_fail(c, "read", window, e);
    return -1;
}

static int all_finite(const TeacherCache *c, float *const *blocks) {
    size_t n = (size_t)c->T * c->d;
    for (int s = 0; s < c->n_slots; s++) {
        int ok = 1;
        const float *x = blocks[s];
#pragma omp simd reduction(& : ok)
        for (size_t i = 0; i < n; i++) ok &= isfinite(x[i]) != 0;
        if (!ok) return 0;
    }
    return 1;
}

void teacher_cache_write(TeacherCache *c, int64_t window, float *const *blocks) {
    int32_t rec = record_of(c, window);
    if (!all_finite(c, blocks)) return;
    int e = record_transfer(c, rec, blocks, 1);
    if (e) cache_fail(c, "write", window, e);
    else c->ready[rec] = 1;
}
