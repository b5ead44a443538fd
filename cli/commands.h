/* cli/commands.h — one entry point per `npt` verb; each parses its own flags, handles
 * --help, prints errors as "npt <verb>: error: ..." and returns the exit code. */
#ifndef NPT_COMMANDS_H
#define NPT_COMMANDS_H

int cmd_generate(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_validate(int argc, char **argv);
int cmd_recipes(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_debug(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* Shared flag helpers (cli/args.c). arg_value returns argv[i+1] for "--flag VALUE" or
 * the part after '=' for "--flag=VALUE", advancing *i; NULL (with a message) if missing,
 * or if the flag was already given (only --set may repeat). */
const char *arg_value(int argc, char **argv, int *i, const char *flag, const char *verb);
int arg_is(const char *arg, const char *flag);
int parse_int_arg(const char *s, const char *flag, const char *verb, long lo, long hi, long *out);
int parse_float_arg(const char *s, const char *flag, const char *verb, double lo, double hi, double *out);
/* An output file named by a flag never replaces an existing file without --force: a
 * reused name must not cost someone a prepared dataset or a scan list. Prints the error
 * and returns -1 when PATH exists and force is 0, or exists and is not a regular file. */
int refuse_existing_output(const char *path, const char *flag, int force, const char *verb);
/* Prints the error and returns -1 when the existing output PATH is one of the command's
 * inputs (the same file by device and inode, so a link or another spelling is caught), or
 * a file inside an input that is a directory (an HF model's files are all read); even
 * with --force: the command would destroy what it reads. NULL entries (inputs not given)
 * are skipped. */
int refuse_output_over_inputs(const char *path, const char *flag, const char *const *inputs, int n, const char *verb);
/* Prints the error and returns -1 when a --set value is not KEY=VALUE with a key: a
 * command-line error (exit 2), caught before any recipe is read. */
int check_set_arg(const char *s, const char *verb);
/* Prints the error and returns -1 when the input PATH does not exist or is a 0-byte
 * file, said as such (with hint: what to give instead) rather than as a format the
 * loader failed to recognise. */
int refuse_missing_input(const char *path, const char *hint, const char *verb);

#endif
