/* util/shared_map.h — a block of memory several processes of one machine map at once:
 * a file (in /dev/shm) the first process creates, fills and then every process maps.
 * MPI ranks on one machine use it so the frozen base weights exist once per machine. */
#ifndef NPT_SHARED_MAP_H
#define NPT_SHARED_MAP_H

#include <stddef.h>

#include "common.h"

/* Creates the new file path (it must not exist) of `bytes`, with its pages reserved up
 * front, and maps it read-write. NULL with *why = errno when any step fails (no file is
 * left behind then); the caller decides whether that is an error. Reserving the pages
 * turns a too-small /dev/shm into ENOSPC here instead of SIGBUS at the first touch. */
void *npt_shared_map_create(const char *path, size_t bytes, int *why);
/* Maps the existing file path, which must hold exactly `bytes`, read-only. */
const void *npt_shared_map_open(const char *path, size_t bytes, NptErr *err);
/* Makes a mapping read-only (the creator, once it has filled it); 0 or -1 with errno. */
int npt_shared_map_seal(void *p, size_t bytes);
void npt_shared_map_close(const void *p, size_t bytes);

#endif
