/* train/teacher_cache.h — the frozen teacher's hidden states of training windows, kept
 * across epochs so that a window seen again skips the teacher forward (about a third of
 * a distillation step's FLOPs at the stories15M shape).
 *
 * A record holds one window's states: n_slots blocks of [T, d] float32, in the order of
 * the objective (train/objective.c): the student's input, the first converted layer's
 * attention, then the output of every compared layer. Records live in a file created in
 * a directory of the caller's (the run's output_dir) and unlinked at once: the page cache
 * keeps hot records in RAM without counting in the process's RSS, and the file vanishes
 * with the process however it ends, so a stale cache can never be read (a resumed run
 * starts cold). A record holds the very floats the teacher computes for that window (the
 * same code on the same shard shape; a sequence's rows do not depend on its neighbours
 * in the batch), so a run with the cache is bit-identical to one without; tests check it.
 *
 * Windows get records first come, first served, until max_records or until output_dir's
 * free space would fall below the reserve the run keeps for its checkpoints; later
 * windows are never cached. A failed write or read disables the cache with a message
 * (last_error) and, once teacher_cache_release has run, gives its disk space back:
 * training goes on, recomputing. The window -> record index is a hash table sized by
 * max_records (24-48 bytes per record), not by the data set. */
#ifndef NPT_TEACHER_CACHE_H
#define NPT_TEACHER_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

typedef enum { CACHE_OFF, CACHE_HIT, CACHE_STORE } CacheAction;

typedef struct {
    int fd;                  /* the unlinked record file */
    int n_slots, T, d;
    size_t record_bytes;     /* n_slots * T * d * 4 */
    int64_t n_windows;       /* window ids 0 .. n_windows-1 */
    int64_t *slot_window;    /* [mask + 1]: the index's keys, -1 for an empty slot */
    int32_t *slot_record;    /* [mask + 1]: the record of slot_window's window */
    uint64_t mask;
    uint8_t *ready;          /* [max_records]: written in full, finite */
    int32_t n_records, max_records; /* records handed out, and the most there can be */
    double reserve_bytes;    /* free space in the file's file system that records never take */
    int full;                /* no record handed out any more: the reserve was reached */
    int64_t hits, misses;    /* per window looked up */
    int failed;              /* a read or write failed: nothing more is read or stored */
    char last_error[256];
} TeacherCache;

/* Records of n_slots x T x d floats for up to max_bytes (at least one record) and at
 * most max_windows records (the windows training can draw; ids run to n_windows, which
 * also counts validation windows), in an unlinked file in dir. reserve_bytes of dir's
 * file system stay free for the run's other files (checkpoints): fails with the reason
 * when dir cannot hold the cache and the reserve. */
int teacher_cache_open(TeacherCache *c, const char *dir, double max_bytes, double reserve_bytes, int64_t n_windows,
                       int64_t max_windows, int n_slots, int T, int d, NptErr *err);
void teacher_cache_close(TeacherCache *c);
/* After a failure, closes the file so that its blocks go back to the file system (it
 * is unlinked: they are freed with the last descriptor). Call it with no read or write
 * running, i.e. between steps; a no-op while the cache works. */
void teacher_cache_release(TeacherCache *c);
/* Records written in full (and finite): the windows the cache can serve. */
int32_t teacher_cache_stored(const TeacherCache *c);

/* What a micro-batch does with its B windows, decided before the shards run: HIT for a
 * window whose record is ready, STORE for one that gets a record now (the first time it
 * is seen while records are left), OFF otherwise (also for a second copy of a window in
 * the same batch). Counts hits and misses. A new record is handed out only while the
 * file system keeps reserve_bytes free after it; the first time it would not, the cache
 * stops growing (full). */
void teacher_cache_plan(TeacherCache *c, const int64_t *window_ids, int B, CacheAction *actions);

/* One window's record into / out of n_slots blocks of T x d floats (blocks[s]).
 * Thread-safe for distinct windows. A read returns -1 if it failed (then the window
 * must be recomputed); a write of non-finite values is refused silently (a poisoned
 * or broken batch never enters the cache). */
int teacher_cache_read(TeacherCache *c, int64_t window, float *const *blocks);
void teacher_cache_write(TeacherCache *c, int64_t window, float *const *blocks);

#endif
