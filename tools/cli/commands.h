// Subcommands of the `modrwkv` binary. Each parses its own flags from argv[2..] and returns the
// process exit code (0 ok, 1 failure, 2 usage error).
#pragma once

namespace modrwkv::cli {

int RunGenerate(int argc, char** argv);
int RunTokenize(int argc, char** argv);
int RunDetokenize(int argc, char** argv);
int RunLogits(int argc, char** argv);
int RunForecast(int argc, char** argv);
int RunInfo(int argc, char** argv);
int RunBench(int argc, char** argv);
int RunMakeDemoModel(int argc, char** argv);
int RunServe(int argc, char** argv);
int RunClient(int argc, char** argv);

}  // namespace modrwkv::cli
