// `modrwkv`: the command-line entry point. Subcommand names are a stable interface.
#include <cstdio>
#include <cstring>

#include "tools/cli/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"generate", modrwkv::cli::RunGenerate, "generate text from a prompt (streams to stdout)"},
    {"tokenize", modrwkv::cli::RunTokenize, "text -> token ids"},
    {"detokenize", modrwkv::cli::RunDetokenize, "token ids -> bytes"},
    {"logits", modrwkv::cli::RunLogits, "final-position logits of a token sequence, raw f32"},
    {"forecast", modrwkv::cli::RunForecast, "forecast a CSV series with a time-series model"},
    {"info", modrwkv::cli::RunInfo, "model shapes, parameters, dtype, state size"},
    {"bench", modrwkv::cli::RunBench, "prefill/decode throughput against this machine's limits"},
    {"make-demo-model", modrwkv::cli::RunMakeDemoModel, "write a small random-weight checkpoint"},
    {"serve", modrwkv::cli::RunServe, "serve the model over gRPC, with Prometheus metrics"},
    {"client", modrwkv::cli::RunClient, "talk to a server: generate, chat, tokenize, info, ..."},
};

void PrintUsage(FILE* out) {
  std::fprintf(out, "usage: modrwkv <command> [flags]   (modrwkv <command> --help for flags)\n\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-17s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    PrintUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) == 0) return c.run(argc, argv);
  }
  std::fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
  PrintUsage(stderr);
  return 2;
}
