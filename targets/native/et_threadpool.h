// The two entry points of ExecuTorch's shared thread pool that the runner needs, declared here because the wheel
// ships libexecutorch_threadpool.so but not its header (extension/threadpool/threadpool.h; only
// threadpool_guard.h is in include/). XNNPACK's delegate and the optimized kernels both run on this one pool, whose
// default size is the number of cores cpuinfo reports; resizing it is what the Python runtime's
// _unsafe_reset_threadpool does, so --threads means the same in both runners.
//
// Only non-virtual member functions are called, through a pointer the library returns, so this declaration needs
// the mangled names to match, not the class layout. A renamed or re-typed function fails at link time (the build is
// cached per executorch version, so that happens once, at build). The return value of the reset is not trusted:
// the runner reads the pool size back with get_thread_count() and reports it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace executorch::extension::threadpool {

class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);

  ThreadPool() = delete;  // only ever obtained from get_threadpool()
};

ThreadPool* get_threadpool();

}  // namespace executorch::extension::threadpool
