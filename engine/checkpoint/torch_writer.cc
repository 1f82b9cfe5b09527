// WriteTorchCheckpoint: a state dict in torch.save's zip layout. data.pkl is a protocol-2 pickle of
// OrderedDict{name: _rebuild_tensor_v2(persistent storage, 0, size, stride, False, OrderedDict())}
// with one storage per tensor stored as archive/data/<index>.
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/atomic_file.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/le_bytes.h"
#include "engine/checkpoint/write_validation.h"
#include "engine/checkpoint/zip_writer.h"

namespace modrwkv {
namespace {

// Emits protocol-2 opcodes. No memo: every global is spelled out, which the unpickler accepts.
class PickleWriter {
 public:
  PickleWriter() {
    Op(0x80);  // PROTO 2
    Op(2);
  }

  void Op(uint8_t op) { out_.push_back(static_cast<char>(op)); }
  void Mark() { Op('('); }

  void Int(int64_t v) {
    if (v >= 0 && v < 0x100) {
      Op('K');  // BININT1
      Op(static_cast<uint8_t>(v));
    } else if (v >= 0 && v < 0x10000) {
      Op('M');  // BININT2
      le::Append16(out_, static_cast<uint16_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      Op('J');  // BININT
      le::Append32(out_, static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {  // LONG1: minimal little-endian two's complement
      std::string bytes;
      uint64_t u = static_cast<uint64_t>(v);
      for (int k = 0; k < 8; ++k) {
        bytes.push_back(static_cast<char>((u >> (8 * k)) & 0xff));
      }
      while (bytes.size() > 1) {
        const uint8_t last = static_cast<uint8_t>(bytes.back());
        const uint8_t prev = static_cast<uint8_t>(bytes[bytes.size() - 2]);
        if ((last == 0 && !(prev & 0x80)) || (last == 0xff && (prev & 0x80))) {
          bytes.pop_back();
        } else {
          break;
        }
      }
      Op(0x8a);
      Op(static_cast<uint8_t>(bytes.size()));
      out_ += bytes;
    }
  }

  void Str(absl::string_view s) {
    Op('X');  // BINUNICODE
    le::Append32(out_, static_cast<uint32_t>(s.size()));
    out_.append(s.data(), s.size());
  }

  void Global(absl::string_view module, absl::string_view name) {
    Op('c');
    absl::StrAppend(&out_, module, "\n", name, "\n");
  }

  void IntTuple(const std::vector<int64_t>& v) {
    if (v.empty()) {
      return Op(')');
    }
    if (v.size() > 3) {
      Mark();
    }
    for (int64_t x : v) {
      Int(x);
    }
    Op(v.size() == 1 ? 0x85 : v.size() == 2 ? 0x86 : v.size() == 3 ? 0x87 : 't');
  }

  void EmptyOrderedDict() {
    Global("collections", "OrderedDict");
    Op(')');  // EMPTY_TUPLE
    Op('R');  // REDUCE
  }

  std::string Finish() {
    Op('.');
    return std::move(out_);
  }

 private:
  std::string out_;
};

absl::string_view StorageClass(DType t) {
  switch (t) {
    case DType::kBF16:
      return "BFloat16Storage";
    case DType::kF16:
      return "HalfStorage";
    case DType::kF32:
      return "FloatStorage";
  }
  return "FloatStorage";
}

std::string StateDictPickle(const std::vector<OwnedTensor>& tensors) {
  constexpr size_t kBatch = 1000;  // like CPython's pickler: bounded SETITEMS batches
  PickleWriter p;
  p.EmptyOrderedDict();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const OwnedTensor& t = tensors[i];
    if (i % kBatch == 0) {
      p.Mark();
    }
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      numel *= d;
    }
    std::vector<int64_t> stride(t.shape.size());
    int64_t s = 1;
    for (size_t k = t.shape.size(); k-- > 0;) {
      stride[k] = s;
      s *= t.shape[k];
    }
    p.Str(t.name);
    p.Global("torch._utils", "_rebuild_tensor_v2");
    p.Mark();
    {
      p.Mark();  // persistent id
      p.Str("storage");
      p.Global("torch", StorageClass(t.dtype));
      p.Str(std::to_string(i));
      p.Str("cpu");
      p.Int(numel);
      p.Op('t');
      p.Op('Q');  // BINPERSID
    }
    p.Int(0);  // storage offset
    p.IntTuple(t.shape);
    p.IntTuple(stride);
    p.Op(0x89);            // requires_grad = False
    p.EmptyOrderedDict();  // backward hooks
    p.Op('t');
    p.Op('R');
    if (i % kBatch == kBatch - 1 || i + 1 == tensors.size()) {
      p.Op('u');  // SETITEMS
    }
  }
  return p.Finish();
}

}  // namespace

absl::Status WriteTorchCheckpoint(const std::string& path,
                                  const std::vector<OwnedTensor>& tensors) {
  if (auto st = ValidateTensorsForWrite(tensors); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
  }
  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(path));
  // torch names the folder after the file stem; any name reads back ("archive" is what torch
  // uses when saving to a buffer).
  const std::string dir = "archive/";
  ZipWriter zip(file.get());
  MODRWKV_RETURN_IF_ERROR(zip.AddStored(dir + "data.pkl", StateDictPickle(tensors)));
  MODRWKV_RETURN_IF_ERROR(zip.AddStored(dir + "byteorder", absl::string_view("little")));
  for (size_t i = 0; i < tensors.size(); ++i) {
    MODRWKV_RETURN_IF_ERROR(zip.AddStored(dir + "data/" + std::to_string(i), tensors[i].bytes));
  }
  MODRWKV_RETURN_IF_ERROR(zip.AddStored(dir + "version", absl::string_view("3\n")));
  MODRWKV_RETURN_IF_ERROR(zip.Finish());
  return file->Commit();
}

}  // namespace modrwkv
