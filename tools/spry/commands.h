/*
 * commands.h -- the subcommands of the spry CLI. Each returns the process exit code
 * (0 ok, 1 runtime error, 2 usage error); argv[0] is the subcommand name.
 */
#ifndef SPRY_TOOLS_COMMANDS_H
#define SPRY_TOOLS_COMMANDS_H

int spry_cmd_demo(int argc, char **argv);
int spry_cmd_plot(int argc, char **argv);
int spry_cmd_train(int argc, char **argv);
int spry_cmd_eval(int argc, char **argv);
int spry_cmd_prepare(int argc, char **argv);
int spry_cmd_analyze(int argc, char **argv);
int spry_cmd_generate(int argc, char **argv);
int spry_cmd_tokenize(int argc, char **argv);
int spry_cmd_tokenizer(int argc, char **argv);
int spry_cmd_serve(int argc, char **argv);
int spry_cmd_convert(int argc, char **argv);
int spry_cmd_quantize(int argc, char **argv);

#endif
