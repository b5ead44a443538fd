/* train/dist.c — the MPI side of data-parallel training (dist.h): the only file that
 * includes mpi.h. One process is one rank, so the state is a handful of statics. */
#include "dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static int mpi_on;             /* dist_init called MPI_Init_thread */
static int my_rank, n_ranks = 1, n_local = 1, my_local_rank, n_machines = 1;
static MPI_Comm node_comm = MPI_COMM_NULL; /* the ranks of this machine */
static float *sum_scratch;     /* dist_sum_floats: this rank's segment from every rank */
static size_t sum_scratch_n;

/* An MPI call failed: the job cannot go on (the other ranks wait in a collective). */
static _Noreturn void dist_die(const char *call, int rc) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error code %d", rc);
    fprintf(stderr, "npt train: error: rank %d of %d: %s failed: %s; the whole job stops\n", my_rank, n_ranks, call,
            text);
    MPI_Abort(MPI_COMM_WORLD, 4);
    exit(4); /* MPI_Abort does not return; this keeps _Noreturn honest */
}

static void check(int rc, const char *call) {
    if (rc != MPI_SUCCESS) dist_die(call, rc);
}

/* Whether an MPI launcher started this process: Open MPI's mpirun, PMIx (Slurm's srun
 * --mpi=pmix) or PMI-1/2 (hydra, srun --mpi=pmi2). A plain `npt train` never touches MPI. */
static int launched_by_mpi(void) {
    const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

int dist_init(NptErr *err) {
    if (mpi_on || !launched_by_mpi()) return 0;
    int provided = 0;
    /* only the main thread calls MPI; OpenMP threads run between the calls */
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return npt_fail(err, "MPI_Init_thread failed: run npt train under mpirun, or without it for one process");
    mpi_on = 1;
    if (provided < MPI_THREAD_FUNNELED) {
        MPI_Finalize();
        mpi_on = 0;
        return npt_fail(err, "this MPI library does not allow OpenMP threads beside it (MPI_THREAD_FUNNELED)");
    }
    check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(MPI_COMM_WORLD, &my_rank), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &n_ranks), "MPI_Comm_size");
    /* keyed by world rank: a machine's local rank 0 is its lowest world rank */
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, my_rank, MPI_INFO_NULL, &node_comm),
          "MPI_Comm_split_type");
    check(MPI_Comm_set_errhandler(node_comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_size(node_comm, &n_local), "MPI_Comm_size");
    check(MPI_Comm_rank(node_comm, &my_local_rank), "MPI_Comm_rank");
    int leader = my_local_rank == 0; /* one per machine */
    check(MPI_Allreduce(&leader, &n_machines, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce (machines)");
    return 0;
}

void dist_finalize(void) {
    free(sum_scratch);
    sum_scratch = NULL, sum_scratch_n = 0;
    if (!mpi_on) return;
    mpi_on = 0;
    check(MPI_Comm_free(&node_comm), "MPI_Comm_free");
    check(MPI_Finalize(), "MPI_Finalize");
}

int dist_rank(void) { return my_rank; }
int dist_world(void) { return n_ranks; }
int dist_local_world(void) { return n_local; }
int dist_local_rank(void) { return my_local_rank; }
int dist_machines(void) { return n_machines; }

/* Rank 0 of comm's buf to the others. */
static void bcast_bytes(void *buf, size_t bytes, MPI_Comm comm, const char *call) {
    if (bytes > INT_MAX) {
        fprintf(stderr, "npt train: error: %zu bytes are more than one MPI message can carry (%d)\n", bytes, INT_MAX);
        MPI_Abort(MPI_COMM_WORLD, 4);
    }
    check(MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, comm), call);
}

void dist_local_bcast(void *buf, size_t bytes) {
    if (n_local > 1) bcast_bytes(buf, bytes, node_comm, "MPI_Bcast (this machine)");
}

void dist_local_barrier(void) {
    if (n_local > 1) check(MPI_Barrier(node_comm), "MPI_Barrier (this machine)");
}

int dist_local_max_int(int v) {
    if (n_local == 1) return v;
    int out;
    check(MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MAX, node_comm), "MPI_Allreduce (this machine)");
    return out;
}

/* Segment r of n elements split over the ranks: the first n % world get one more. */
static void segment(size_t n, int r, int *count, int *start) {
    size_t base = n / (size_t)n_ranks, extra = n % (size_t)n_ranks;
    *count = (int)(base + ((size_t)r < extra));
    *start = (int)(base * (size_t)r + ((size_t)r < extra ? (size_t)r : extra));
}

/* A reduce-scatter done by hand, then an allgather: rank r receives segment r from every
 * rank (MPI_Alltoallv), adds them up in rank order, and the summed segments are gathered
 * back. The same traffic as a ring allreduce, and the order of the additions is fixed. */
void dist_sum_floats(float *buf, size_t n) {
    if (n_ranks == 1) return;
    if (n > INT_MAX) {
        fprintf(stderr, "npt train: error: %zu gradients are more than one MPI message can carry (%d)\n", n, INT_MAX);
        MPI_Abort(MPI_COMM_WORLD, 4);
    }
    int W = n_ranks, mine, my_start;
    int *counts = npt_xmalloc((size_t)4 * W * sizeof(int), "gradient sum counts");
    int *starts = counts + W, *recv_counts = counts + 2 * W, *recv_starts = counts + 3 * W;
    for (int r = 0; r < W; r++) segment(n, r, &counts[r], &starts[r]);
    mine = counts[my_rank], my_start = starts[my_rank];
    for (int r = 0; r < W; r++) recv_counts[r] = mine, recv_starts[r] = r * mine;
    size_t need = (size_t)W * (size_t)mine;
    if (need > sum_scratch_n) {
        free(sum_scratch);
        sum_scratch = npt_xmalloc((need ? need : 1) * sizeof(float), "gradient sum buffer");
        sum_scratch_n = need;
    }
    check(MPI_Alltoallv(buf, counts, starts, MPI_FLOAT, sum_scratch, recv_counts, recv_starts, MPI_FLOAT, MPI_COMM_WORLD),
          "MPI_Alltoallv (gradient sum)");
    float *out = buf + my_start;
    for (int i = 0; i < mine; i++) {
        float acc = sum_scratch[i];
        for (int r = 1; r < W; r++) acc += sum_scratch[(size_t)r * mine + i];
        out[i] = acc;
    }
    check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, starts, MPI_FLOAT, MPI_COMM_WORLD),
          "MPI_Allgatherv (gradient sum)");
    free(counts);
}

void dist_sum_doubles(double *v, int n) {
    if (n_ranks == 1) return;
    double *all = npt_xmalloc((size_t)n_ranks * n * sizeof(double), "loss sum buffer");
    check(MPI_Allgather(v, n, MPI_DOUBLE, all, n, MPI_DOUBLE, MPI_COMM_WORLD), "MPI_Allgather (loss sum)");
    for (int i = 0; i < n; i++) {
        double acc = all[i];
        for (int r = 1; r < n_ranks; r++) acc += all[(size_t)r * n + i];
        v[i] = acc;
    }
    free(all);
}

int dist_max_int(int v) {
    if (n_ranks == 1) return v;
    int out;
    check(MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce");
    return out;
}

int dist_bcast_int(int v) {
    if (n_ranks == 1) return v;
    check(MPI_Bcast(&v, 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Bcast");
    return v;
}

void dist_bcast(void *buf, size_t bytes) {
    if (n_ranks > 1) bcast_bytes(buf, bytes, MPI_COMM_WORLD, "MPI_Bcast");
}

void dist_gather_u64(uint64_t v, uint64_t *all) {
    if (n_ranks == 1) {
        if (all) all[0] = v;
        return;
    }
    check(MPI_Allgather(&v, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD), "MPI_Allgather");
}
