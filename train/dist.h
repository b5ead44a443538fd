/* train/dist.h — data-parallel `npt train` over MPI ranks (mpirun -np N npt train ...).
 *
 * Every rank sees the whole model (its frozen base once per machine: the trainer's
 * load_base_model shares it among a machine's ranks) and draws the whole data stream
 * in the same order; micro-batch a of a step runs on rank a % world, and the ranks'
 * gradients and losses are summed before the step is judged (non-finite: skipped
 * everywhere), clipped and applied identically on every rank. Rank 0 alone writes the
 * run directory and prints.
 *
 * Without an MPI launcher in the environment (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_SIZE)
 * MPI is never initialised: world 1, and every call below returns at once.
 * A failed MPI call cannot be recovered from (the other ranks wait in a collective), so
 * it prints one line and aborts the whole job (MPI_Abort, exit status 4). */
#ifndef NPT_DIST_H
#define NPT_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

/* MPI_Init when launched by an MPI launcher; 0, or -1 with err set. */
int dist_init(NptErr *err);
/* MPI_Finalize if dist_init initialised MPI; call once, before returning from the verb. */
void dist_finalize(void);

int dist_rank(void);
int dist_world(void);
/* Ranks on this machine (one shared-memory node), for the default thread count. */
int dist_local_world(void);
/* This rank among them: 0 is the machine's lowest world rank. */
int dist_local_rank(void);
/* Machines (shared-memory nodes) the ranks run on. */
int dist_machines(void);
/* Local rank 0's buf[0..bytes) to every rank of this machine. */
void dist_local_bcast(void *buf, size_t bytes);
/* Waits until every rank of this machine has reached it. */
void dist_local_barrier(void);
/* The largest v over the ranks of this machine. */
int dist_local_max_int(int v);

/* buf[0..n) summed over the ranks into every rank's buf, each element as
 * ((r0 + r1) + r2) + ... in rank order: the same floats on every rank and in every run
 * with the same world size (MPI_Allreduce promises neither). n must fit an int. */
void dist_sum_floats(float *buf, size_t n);
/* The same for a few doubles (losses and counters). */
void dist_sum_doubles(double *v, int n);
/* The largest v over the ranks. */
int dist_max_int(int v);
/* Rank 0's v, on every rank. */
int dist_bcast_int(int v);
/* Rank 0's buf[0..bytes) into every rank's buf. */
void dist_bcast(void *buf, size_t bytes);
/* Every rank's v into all[0..world) (all may be NULL on world 1). */
void dist_gather_u64(uint64_t v, uint64_t *all);

#endif
