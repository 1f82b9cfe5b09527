// tokenize / detokenize: the World tokenizer on the command line.
#include <cstdio>

#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace modrwkv::cli {

int RunTokenize(int argc, char** argv) {
  Flags flags("tokenize", "--vocab V (--text TEXT | --text-file F)",
              "Prints the token ids of the text's raw bytes on one line, space-separated.");
  flags.Add("vocab", "", "vocabulary file (rwkv_vocab_v20230424.txt); default: the bundled copy")
      .Add("text", "", "text to tokenize")
      .Add("text-file", "", "file whose bytes to tokenize");
  auto parsed = flags.Parse(argc, argv, 2);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;
  const bool has_text = !flags.Str("text").empty(), has_file = !flags.Str("text-file").empty();
  if (has_text == has_file) {
    return UsageError(flags, absl::InvalidArgumentError("give exactly one of --text, --text-file"));
  }
  auto tok = LoadTokenizer(flags.Str("vocab"), "");
  if (!tok.ok()) return Fail(tok.status());
  std::string text = flags.Str("text");
  if (has_file) {
    auto data = ReadFile(flags.Str("text-file"));
    if (!data.ok()) return Fail(data.status());
    text = *std::move(data);
  }
  const std::vector<int32_t> ids = (*tok)->Encode(text);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
  return 0;
}

int RunDetokenize(int argc, char** argv) {
  Flags flags("detokenize", "--vocab V --tokens \"1 2 3\"",
              "Writes the bytes of the token ids to stdout, unchanged (no newline added).");
  flags.Add("vocab", "", "vocabulary file; default: the bundled copy")
      .Add("tokens", "", "token ids, space- or comma-separated", true);
  auto parsed = flags.Parse(argc, argv, 2);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;
  auto ids = ParseIds(flags.Str("tokens"), "tokens");
  if (!ids.ok()) return UsageError(flags, ids.status());
  auto tok = LoadTokenizer(flags.Str("vocab"), "");
  if (!tok.ok()) return Fail(tok.status());
  auto bytes = (*tok)->Decode(*ids);
  if (!bytes.ok()) return Fail(bytes.status());
  std::fwrite(bytes->data(), 1, bytes->size(), stdout);
  return 0;
}

}  // namespace modrwkv::cli
