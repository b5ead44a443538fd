/* data/prepare.h — text and JSONL to token files (`npt data prepare`, and the token
 * cache of text sources in training), and token-file statistics (`npt data stats`).
 *
 * Documents: in a text file, documents are separated by the separator string
 * "<|endoftext|>" (anywhere; one newline, LF or CRLF, directly before and one directly
 * after it belong to the separator); a file without separators is one document, and each file
 * of a folder ends a document. In JSONL every line is one document (its text field);
 * blank lines are ignored. Empty documents are dropped. Every document is encoded as
 * BOS + tokens (+ EOS with append_eos), so in a token stream a document starts at
 * each BOS. A document longer than DATA_MAX_PIECE bytes is encoded in pieces cut only
 * where the ids stay those of the whole (data/tok_cut.c; the pieces after the first get
 * no BOS and are encoded as continuations). A JSONL line must be one JSON value (more
 * after it is a bad record), and a text field holding \u0000 is a bad record.
 *
 * Input must be valid UTF-8 without NUL bytes: the first bad byte is an error naming
 * the file and byte offset. Output: raw little-endian ids (.u16 when the vocabulary
 * fits 16 bits, else .u32, or as the extension says) or HDF5 (.h5/.hdf5: dataset
 * /tokens plus attributes). Written to a temporary file and renamed: an interrupted
 * run leaves no partial output. Tokenization runs on all OpenMP threads over blocks
 * of documents; the output order is the input order whatever the thread count. */
#ifndef NPT_PREPARE_H
#define NPT_PREPARE_H

#include <stdint.h>
#include <stdio.h>

#include "dataset.h"

#define DATA_SEPARATOR "<|endoftext|>"
#define DATA_MAX_PIECE (1u << 20)

typedef struct {
    const Tokenizer *tok;
    int bos, eos, append_eos;
    DatasetFormat input_format;  /* DATASET_AUTO: per file by extension (.jsonl/.ndjson) */
    const char *text_field;      /* NULL = "text" */
    int skip_bad_records;        /* else the first bad JSONL line is an error */
    DatasetFormat output_format; /* DATASET_AUTO: from the output name */
    FILE *progress;              /* progress bar / lines; NULL = none */
    FILE *log;                   /* warnings; NULL = none */
    /* 0: all the input. Else tokenizing stops after the block (a few MB of text) that
     * brings the count to max_tokens: the output is a prefix of the whole one, for
     * commands that read only the first windows (npt eval, npt debug). */
    uint64_t max_tokens;
    /* 1 (npt data prepare without --force): an output that appears while the input is
     * tokenized is kept and the command fails naming it, instead of being replaced */
    int keep_existing;
} PrepareOptions;

typedef struct {
    uint64_t bytes, tokens, documents, bad_records, files;
    uint64_t checksum; /* token_checksum_final of the ids written (a cache's header holds it too) */
    double seconds;
} PrepareStats;

/* input: a file or a folder (its regular files, recursively, in name order). */
int data_prepare(const char *input, const char *output, const PrepareOptions *o, PrepareStats *st, NptErr *err);

/* The token cache: the file text source `input` tokenizes into, in cache_dir, named by
 * a hash of the input (path, sizes, mtimes), the tokenizer (pieces and merges) and the
 * options (the key). Its ids follow a header (data_internal.h: TokenHeader) holding the
 * key, the token count and a checksum. A file that exists is checked (header, size,
 * checksum: one read of it) and used; one cut short, damaged or without a header is made
 * again from the source, with a warning on o->log naming the reason. Made like
 * data_prepare's output (temporary file + rename). Older npt versions' caches (no header)
 * have other names: neither version reads the other's files. Writes its path to out. */
int data_cached_tokens(const char *input, const char *cache_dir, const PrepareOptions *o, char *out, size_t out_n,
                       NptErr *err);

typedef struct {
    uint64_t tokens, documents, min_id, max_id;
    uint64_t min_doc, max_doc;  /* document lengths in tokens, BOS included */
    uint64_t hist[40];          /* documents of length in [2^i, 2^(i+1)) */
    uint64_t before_first_bos;  /* tokens ahead of the first BOS: part of no document */
} TokenStats;

/* Streams a token file (path, "file.h5:/dataset"); documents start at each bos. */
int data_token_stats(const char *spec, DatasetFormat fmt, int bos, TokenStats *st, NptErr *err);

#endif
