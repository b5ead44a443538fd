/* util/common.c — implementation of the shared helpers declared in common.h. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int npt_fail(NptErr *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void npt_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("npt: internal error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

void *npt_xmalloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "npt: error: out of memory allocating %zu bytes for %s\n", bytes, what);
        exit(2);
    }
    return p;
}

void *npt_xcalloc(size_t n, size_t size, const char *what) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "npt: error: out of memory allocating %zu x %zu bytes for %s\n", n, size, what);
        exit(2);
    }
    return p;
}

void *npt_try_malloc(size_t bytes, const char *what, NptErr *err) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) npt_fail(err, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

char *npt_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = npt_xmalloc(n, "string");
    memcpy(p, s, n);
    return p;
}

void *npt_aligned_alloc(size_t bytes, const char *what, NptErr *err) {
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) {
        npt_fail(err, "out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    return p;
}

static const char *file_kind(mode_t m) {
    if (S_ISDIR(m)) return "directory";
    if (S_ISFIFO(m)) return "named pipe";
    if (S_ISCHR(m)) return "character device";
    if (S_ISBLK(m)) return "block device";
    if (S_ISSOCK(m)) return "socket";
    return "special file";
}

static int refuse_input(const char *path, mode_t m, const char *what, NptErr *err) {
    npt_fail(err, "%s: is a %s, not a regular file; give the %s as a regular file", path, file_kind(m),
             what ? what : "input");
    errno = S_ISDIR(m) ? EISDIR : EINVAL;
    return -2;
}

/* Inputs are sized, seeked and read at offsets (pread), so only a regular file will do. A
 * named pipe is the dangerous one: open() of a pipe without a writer blocks forever, and
 * with a writer its bytes could be read only once, in order. stat() first refuses
 * non-regular paths without opening them (opening some devices has side effects); the
 * open itself is O_NONBLOCK, so a pipe swapped in after that stat cannot block it, and
 * fstat() judges the object actually opened. Regular files ignore O_NONBLOCK; it is
 * cleared anyway so the descriptor reads as any other. */
int npt_open_input(const char *path, const char *what, NptErr *err) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return refuse_input(path, st.st_mode, what, err);
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        npt_fail(err, "cannot open %s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    int flags = fstat(fd, &st) == 0 ? fcntl(fd, F_GETFL) : -1;
    if (flags >= 0 && !S_ISREG(st.st_mode)) {
        close(fd);
        return refuse_input(path, st.st_mode, what, err);
    }
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        npt_fail(err, "cannot open %s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    return fd;
}

/* As npt_open_input: stat first, a non-blocking open (a pipe without a reader fails at
 * once with ENXIO instead of blocking), fstat of what was opened. */
FILE *npt_fopen_append(const char *path, const char *what, NptErr *err) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        refuse_input(path, st.st_mode, what, err);
        return NULL;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, 0666);
    int flags = fd >= 0 && fstat(fd, &st) == 0 ? fcntl(fd, F_GETFL) : -1;
    if (flags >= 0 && !S_ISREG(st.st_mode)) {
        close(fd);
        refuse_input(path, st.st_mode, what, err);
        return NULL;
    }
    FILE *f = flags >= 0 && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0 ? fdopen(fd, "a") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0) close(fd);
        npt_fail(err, "cannot append to %s: %s", path, strerror(e));
        errno = e;
    }
    return f;
}

int npt_check_input(const char *path, const char *what, NptErr *err) {
    int fd = npt_open_input(path, what, err);
    if (fd < 0) return fd;
    close(fd);
    return 0;
}

int npt_fopen_input(const char *path, const char *what, FILE **out, NptErr *err) {
    int fd = npt_open_input(path, what, err);
    *out = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (fd < 0 || *out) return fd < 0 ? fd : 0;
    int e = errno;
    close(fd);
    npt_fail(err, "cannot open %s: %s", path, strerror(e));
    errno = e;
    return -1;
}

int npt_file_is_hdf5(const char *path, const char *what, NptErr *err) {
    int fd = npt_open_input(path, what, err);
    if (fd < 0) return fd == -2 ? -2 : 0;
    unsigned char sig[8] = {0};
    ssize_t n = read(fd, sig, sizeof sig);
    close(fd);
    return n == 8 && !memcmp(sig, "\x89HDF\r\n\x1a\n", 8);
}

char *npt_read_input(const char *path, const char *what, size_t *len_out, NptErr *err) {
    FILE *f;
    if (npt_fopen_input(path, what, &f, err)) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        npt_fail(err, "cannot seek in %s: %s", path, strerror(errno));
        fclose(f);
        return NULL;
    }
    long len = ftell(f);
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        npt_fail(err, "cannot determine the size of %s (is it a regular file?)", path);
        fclose(f);
        return NULL;
    }
    char *buf = npt_try_malloc((size_t)len + 1, path, err);
    if (!buf) {
        fclose(f);
        return NULL;
    }
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
        npt_fail(err, "cannot read %s: short read", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[len] = '\0';
    if (len_out) *len_out = (size_t)len;
    return buf;
}

char *npt_read_file(const char *path, size_t *len_out, NptErr *err) { return npt_read_input(path, "input", len_out, err); }

double npt_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t npt_count_nonfinite(const float *x, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(x[i]);
    return bad;
}

float npt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalize */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float npt_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t npt_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fff + ((bits >> 16) & 1); /* round to nearest even */
    return (uint16_t)((bits + rounding) >> 16);
}

uint16_t npt_f32_to_f16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint32_t sign = (bits >> 16) & 0x8000;
    uint32_t absbits = bits & 0x7fffffffu;
    if (absbits > 0x7f800000u) return (uint16_t)(sign | 0x7e00); /* NaN */
    if (absbits >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow -> Inf (>= 65520) */
    if (absbits < 0x38800000u) { /* subnormal or zero in half */
        float af;
        memcpy(&af, &absbits, 4);
        /* half subnormal step is 2^-24; round to nearest even via float arithmetic */
        float scaled = af * 16777216.0f; /* 2^24 */
        uint32_t m = (uint32_t)lrintf(scaled);
        return (uint16_t)(sign | m);
    }
    uint32_t exp = ((absbits >> 23) - 127 + 15);
    uint32_t mant = absbits & 0x7fffff;
    uint32_t half = (exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)(sign | half);
}

uint64_t npt_fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t splitmix(uint64_t *s) { return npt_mix64(*s += 0x9E3779B97F4A7C15ull); }

void npt_fill_normal(float *x, size_t n, float std, uint64_t *state) {
    for (size_t i = 0; i < n; i++) {
        double u1 = ((splitmix(state) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1]: log is finite */
        double u2 = (splitmix(state) >> 11) / 9007199254740992.0;
        x[i] = std == 0.0f ? 0.0f : (float)(std * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
    }
}

int npt_json_number_str(char *buf, size_t cap, const char *key, double v) {
    if (isfinite(v)) return snprintf(buf, cap, ",\"%s\":%.10g", key, v);
    return snprintf(buf, cap, ",\"%s\":null", key);
}

void npt_json_number(FILE *f, const char *key, double v) {
    char buf[strlen(key) + 40]; /* ,"key": and %.10g's at most 17 characters */
    npt_json_number_str(buf, sizeof buf, key, v);
    fputs(buf, f);
}
