/* train/ckpt_internal.h — helpers shared by the checkpoint writer, reader and run-directory
 * code (train/checkpoint.c, ckpt_read.c, ckpt_dir.c); not part of the public API. */
#ifndef NPT_CKPT_INTERNAL_H
#define NPT_CKPT_INTERNAL_H

#include <stddef.h>

/* Silences HDF5's automatic error printing: every failure becomes an NptErr instead. */
void ckpt_h5_quiet(void);

/* The innermost message on HDF5's error stack (the one that says what really went wrong,
 * e.g. "truncated file: eof = 3000, ..."), or "" if the stack is empty. Call right after
 * the failing HDF5 call: any later HDF5 call resets the stack. */
void ckpt_h5_detail(char *buf, size_t size);

/* 1 if a tensor name is unusable: empty, absolute, empty components, or inside one of the
 * metadata objects (base/, state/, history/, recipe). */
int ckpt_name_reserved(const char *name);

#endif
