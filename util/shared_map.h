/* util/shared_map.h — a block of memory several processes of one machine map at once:
 * a file (in /dev/shm) the first process creates, fills and then every process maps.
 * MPI ranks on one machine use it so the frozen base weights exist once per machine. */
#ifndef NPT_SHARED_MAP_H
#define NPT_SHARED_MAP_H

#include <stddef.h>

#include "common.h"

/* Creates the new, empty file path (it must not exist) and takes an exclusive flock on
 * it: the returned descriptor, kept open until the name is removed, is what tells this
 * live file from one a killed process left (npt_shared_map_remove_stale). -1 with *why
 * = errno on failure (no file is left behind then). */
int npt_shared_map_claim(const char *path, int *why);
/* Gives the claimed, still empty file path `bytes`, with its pages reserved up front,
 * and maps it read-write. NULL with *why = errno when any step fails (the file is then
 * empty again); the caller decides whether that is an error. Reserving the pages turns
 * a too-small /dev/shm into ENOSPC here instead of SIGBUS at the first touch. */
void *npt_shared_map_create(const char *path, size_t bytes, int *why);
/* Maps the existing file path, which must hold exactly `bytes`, read-only. */
const void *npt_shared_map_open(const char *path, size_t bytes, NptErr *err);
/* Makes a mapping read-only (the creator, once it has filled it); 0 or -1 with errno. */
int npt_shared_map_seal(void *p, size_t bytes);
void npt_shared_map_close(const void *p, size_t bytes);
/* Removes the files of dir named prefix + PID-TIME (digits, a dash, digits: the names
 * claims get) that a killed process left: this user's regular files on which nobody
 * holds a lock, last changed min_age_s seconds ago or more (a claim is locked a moment
 * after it is created). Returns how many were removed,
 * their disk use in *bytes and the first name in first (of first_cap bytes). A dir
 * that cannot be listed removes nothing: the claim that follows reports the problem. */
int npt_shared_map_remove_stale(const char *dir, const char *prefix, int min_age_s, size_t *bytes, char *first,
                                size_t first_cap);

#endif
