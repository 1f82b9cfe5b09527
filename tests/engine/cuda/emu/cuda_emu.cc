// The CUDA emulator's host side (cuda_emu.h says what it is for): the runtime API the backend and
// its tests call, with device memory in host memory, streams as queues run when the host waits,
// and CUDA graphs as recorded queues; kernels run in executor.cc.
#include "tests/engine/cuda/emu/cuda_emu.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "tests/engine/cuda/emu/executor.h"

// An operation queued on a stream: a kernel launch (`launch` set) or other work.
struct EmuOp {
  std::function<void()> run;
  std::shared_ptr<const cuda_emu::KernelLaunch> launch;
};

// The runtime's opaque handles.
struct CUstream_st {
  std::deque<EmuOp> queue;
  uint64_t enqueued = 0;  // operations ever queued
  uint64_t completed = 0;
  struct CUgraph_st* capture = nullptr;  // while capturing: where operations go
  bool capture_invalidated = false;
  bool blocking = true;  // synchronises with the legacy default stream
};
struct CUevent_st {
  CUstream_st* stream = nullptr;  // where it was last recorded
  uint64_t seq = 0;               // the stream's operations before it
  double at_ms = 0;               // when the stream reached it
};
struct CUgraph_st {
  std::vector<EmuOp> ops;
};
struct CUgraphExec_st {
  std::vector<EmuOp> ops;
};

namespace cuda_emu {
namespace {

// ---- the device: one at a time, like one GPU's queue ----

std::recursive_mutex& DeviceMutex() {
  static std::recursive_mutex m;
  return m;
}

thread_local cudaError_t last_error = cudaSuccess;

cudaError_t Fail(cudaError_t e) {
  last_error = e;
  return e;
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

CUstream_st& DefaultStream() {
  static CUstream_st s;
  return s;
}
CUstream_st* Resolve(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &DefaultStream();
  return s;
}

std::vector<CUstream_st*>& Streams() {
  static std::vector<CUstream_st*> all{&DefaultStream()};
  return all;
}

// Runs the stream's queued operations until `seq` of them have completed. A kernel followed by
// an overlapped launch lets that one start first (programmatic dependent launch).
void RunUntil(CUstream_st* s, uint64_t seq) {
  std::lock_guard lock(DeviceMutex());
  while (s->completed < seq && !s->queue.empty()) {
    EmuOp op = std::move(s->queue.front());
    s->queue.pop_front();
    if (op.launch != nullptr && !s->queue.empty() && s->queue.front().launch != nullptr) {
      StartEarly(s->queue.front().launch, op.launch->shape.kernel);
    }
    op.run();
    ++s->completed;
  }
}
void RunAll(CUstream_st* s) { RunUntil(s, UINT64_MAX); }
void RunEverything() {
  std::lock_guard lock(DeviceMutex());
  for (CUstream_st* s : Streams()) RunAll(s);
}

// Queues op on the stream, or records it into the stream's capture. The legacy default stream
// waits for the blocking streams' work queued before, and they for its.
cudaError_t QueueOp(cudaStream_t stream, EmuOp op) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s->capture != nullptr) {
    s->capture->ops.push_back(std::move(op));
    return cudaSuccess;
  }
  if (s == &DefaultStream()) {
    for (CUstream_st* other : Streams()) {
      if (other != s && other->blocking) RunAll(other);
    }
  } else if (s->blocking) {
    RunAll(&DefaultStream());
  }
  s->queue.push_back(std::move(op));
  ++s->enqueued;
  return cudaSuccess;
}

// Work other than a kernel.
cudaError_t Queue(cudaStream_t stream, std::function<void()> op) {
  return QueueOp(stream, EmuOp{std::move(op), nullptr});
}

// What waits for the device is refused in a capturing stream, and spoils the capture.
bool RefusedWhileCapturing(CUstream_st* s) {
  if (s->capture == nullptr) return false;
  s->capture_invalidated = true;
  return true;
}

// ---- memory ----

struct Allocation {
  size_t bytes;
  bool pinned;
};
std::map<uintptr_t, Allocation>& Allocations() {
  static std::map<uintptr_t, Allocation> m;
  return m;
}
size_t device_bytes_in_use = 0;

size_t DeviceMemoryBytes() {
  static const size_t bytes = [] {
    const char* env = std::getenv("MODRWKV_CUDA_EMU_MEMORY_MB");
    return static_cast<size_t>(env != nullptr ? std::atoll(env) : 4096) << 20;
  }();
  return bytes;
}

void* Allocate(size_t bytes, bool pinned) {
  // 256-byte aligned as cudaMalloc's, and exactly `bytes` long, so that AddressSanitizer flags
  // an access past the end even where the device's allocation granularity would hide it.
  void* p = nullptr;
  if (posix_memalign(&p, 256, std::max<size_t>(bytes, 1)) != 0) return nullptr;
  // Fresh device memory holds whatever was there: NaN bits, so that a read of what nobody wrote
  // shows in the results.
  std::memset(p, 0xff, std::max<size_t>(bytes, 1));
  Allocations()[reinterpret_cast<uintptr_t>(p)] = {bytes, pinned};
  return p;
}

bool IsPinned(const void* p) {
  const auto& all = Allocations();
  auto it = all.upper_bound(reinterpret_cast<uintptr_t>(p));
  if (it == all.begin()) return false;
  --it;
  return it->second.pinned && reinterpret_cast<uintptr_t>(p) < it->first + it->second.bytes;
}

// The kernels' dynamic shared memory limits (cudaFuncSetAttribute).
std::map<const void*, int>& SharedLimits() {
  static std::map<const void*, int> m;
  return m;
}
constexpr int kDefaultSharedBytes = 48 * 1024;
constexpr int kMaxSharedBytesOptIn = 227 * 1024;  // sm_90
constexpr int kMultiprocessors = 132;             // an H100 / H200

}  // namespace

cudaError_t Enqueue(cudaStream_t stream, const LaunchShape& shape, std::function<void()> body,
                    bool overlapped) {
  const dim3 b = shape.block, g = shape.grid;
  const uint64_t threads = static_cast<uint64_t>(b.x) * b.y * b.z;
  if (threads == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64 || g.x == 0 ||
      g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
    return Fail(cudaErrorInvalidConfiguration);
  }
  int limit = kDefaultSharedBytes;
  {
    std::lock_guard lock(DeviceMutex());
    if (auto it = SharedLimits().find(shape.kernel); it != SharedLimits().end()) limit = it->second;
  }
  if (shape.shared_bytes > static_cast<size_t>(limit)) return Fail(cudaErrorInvalidValue);
  auto launch =
      std::make_shared<const KernelLaunch>(KernelLaunch{shape, std::move(body), overlapped});
  return QueueOp(stream, EmuOp{[launch] { RunLaunch(*launch); }, launch});
}

cudaError_t QueueWork(cudaStream_t stream, std::function<void()> work) {
  return Queue(stream, std::move(work));
}

}  // namespace cuda_emu

using namespace cuda_emu;  // NOLINT: the runtime's functions below are global, as cudart's are

// ---- errors ----

extern "C" {

cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    default:
      return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

// ---- devices ----

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : Fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return Fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = kMultiprocessors;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = kMaxSharedBytesOptIn;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = kDefaultSharedBytes;
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = 32;
      return cudaSuccess;
    default:
      return Fail(cudaErrorInvalidValue);
  }
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return Fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "CUDA emulator on the CPU (sm_90 limits)");
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = kMultiprocessors;
  prop->totalGlobalMem = DeviceMemoryBytes();
  prop->sharedMemPerBlock = kDefaultSharedBytes;
  prop->sharedMemPerBlockOptin = kMaxSharedBytesOptIn;
  prop->maxThreadsPerBlock = 1024;
  prop->warpSize = 32;
  prop->l2CacheSize = 50 << 20;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  std::lock_guard lock(DeviceMutex());
  *total = DeviceMemoryBytes();
  *free = *total - std::min(*total, device_bytes_in_use);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  RunEverything();
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || value > kMaxSharedBytesOptIn) return Fail(cudaErrorInvalidValue);
  std::lock_guard lock(DeviceMutex());
  SharedLimits()[func] = value;
  return cudaSuccess;
}

// ---- memory ----

cudaError_t cudaMalloc(void** p, size_t bytes) {
  std::lock_guard lock(DeviceMutex());
  if (device_bytes_in_use + bytes > DeviceMemoryBytes()) return Fail(cudaErrorMemoryAllocation);
  *p = Allocate(bytes, false);
  if (*p == nullptr) return Fail(cudaErrorMemoryAllocation);
  device_bytes_in_use += bytes;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (p == nullptr) return cudaSuccess;
  RunEverything();  // cudaFree waits for the device
  std::lock_guard lock(DeviceMutex());
  auto it = Allocations().find(reinterpret_cast<uintptr_t>(p));
  if (it == Allocations().end() || it->second.pinned) return Fail(cudaErrorInvalidValue);
  device_bytes_in_use -= it->second.bytes;
  Allocations().erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  std::lock_guard lock(DeviceMutex());
  *p = Allocate(bytes, true);
  return *p == nullptr ? Fail(cudaErrorMemoryAllocation) : cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  if (p == nullptr) return cudaSuccess;
  RunEverything();
  std::lock_guard lock(DeviceMutex());
  auto it = Allocations().find(reinterpret_cast<uintptr_t>(p));
  if (it == Allocations().end() || !it->second.pinned) return Fail(cudaErrorInvalidValue);
  Allocations().erase(it);
  std::free(p);
  return cudaSuccess;
}

// A copy queued on a stream. Pageable host memory behaves as the runtime documents: a source is
// read at the call (the runtime stages it), a destination is written before the call returns
// (the call waits for the stream); pinned memory is read and written when the stream gets there.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  const bool from_host = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost;
  const bool to_host = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost;
  if (from_host && !IsPinned(src) && s->capture == nullptr) {
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes);
    return Queue(stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  }
  if (to_host && !IsPinned(dst)) {
    if (RefusedWhileCapturing(s)) return Fail(cudaErrorStreamCaptureUnsupported);
    Queue(stream, [dst, src, bytes] { std::memcpy(dst, src, bytes); });
    RunAll(s);
    return cudaSuccess;
  }
  return Queue(stream, [dst, src, bytes] { std::memmove(dst, src, bytes); });
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = &DefaultStream();
  const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
  RunAll(s);
  return e;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  return Queue(stream, [p, value, bytes] { std::memset(p, value, bytes); });
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  std::lock_guard lock(DeviceMutex());
  const cudaError_t e = cudaMemsetAsync(p, value, bytes, nullptr);
  RunAll(&DefaultStream());
  return e;
}

// ---- streams and events ----

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  std::lock_guard lock(DeviceMutex());
  *stream = new CUstream_st;
  (*stream)->blocking = (flags & cudaStreamNonBlocking) == 0;
  Streams().push_back(*stream);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard lock(DeviceMutex());
  RunAll(stream);  // the runtime lets queued work finish
  auto& all = Streams();
  all.erase(std::remove(all.begin(), all.end(), stream), all.end());
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (RefusedWhileCapturing(s)) return Fail(cudaErrorStreamCaptureUnsupported);
  RunAll(s);
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s->queue.empty()) return cudaSuccess;
  RunAll(s);  // not ready now; the device gets on with it
  return cudaErrorNotReady;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  // The runtime frees a pending event once its stream gets there; here it gets there now.
  if (event->stream != nullptr) RunUntil(event->stream, event->seq);
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s->capture != nullptr) return cudaSuccess;  // a node of the graph: no host-visible state
  event->stream = s;
  event->seq = s->enqueued + 1;
  return Queue(stream, [event] { event->at_ms = NowMs(); });
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (event->stream != nullptr) RunUntil(event->stream, event->seq);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  std::lock_guard lock(DeviceMutex());
  if (event->stream == nullptr || event->stream->completed >= event->seq) return cudaSuccess;
  RunUntil(event->stream, event->seq);  // not ready now; the device gets on with it
  return cudaErrorNotReady;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = static_cast<float>(end->at_ms - start->at_ms);
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  if (event->stream == nullptr) return cudaSuccess;
  CUstream_st* other = event->stream;
  const uint64_t seq = event->seq;
  return Queue(stream, [other, seq] { RunUntil(other, seq); });
}

// ---- graphs ----

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s == &DefaultStream() || s->capture != nullptr) return Fail(cudaErrorInvalidValue);
  s->capture = new CUgraph_st;
  s->capture_invalidated = false;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s->capture == nullptr) return Fail(cudaErrorInvalidValue);
  CUgraph_st* g = s->capture;
  s->capture = nullptr;
  if (s->capture_invalidated) {
    delete g;
    *graph = nullptr;
    return Fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = g;
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  std::lock_guard lock(DeviceMutex());
  *status = Resolve(stream)->capture != nullptr ? cudaStreamCaptureStatusActive
                                                : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (graph == nullptr) return Fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return Fail(cudaErrorInvalidValue);
  std::lock_guard lock(DeviceMutex());
  for (const EmuOp& op : exec->ops) QueueOp(stream, op);
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

}  // extern "C"
