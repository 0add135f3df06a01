#include "csrc/common/cpu_isa.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include <unistd.h>

namespace torch_sparse_conv {

CpuIsa detect_cpu_isa() {
  const char* cap = std::getenv("TSC_CPU_ISA");
  const std::string limit = cap ? cap : "";
  const bool no_avx512 = limit == "avx2" || std::getenv("TSC_NO_AVX512") != nullptr;
#ifdef TSC_X86_ISAS
  __builtin_cpu_init();
  if (limit != "baseline" && !no_avx512 && __builtin_cpu_supports("x86-64-v4")) {
    return CpuIsa::Avx512;
  }
  if (limit != "baseline" && __builtin_cpu_supports("x86-64-v3")) return CpuIsa::Avx2;
#endif
  return CpuIsa::Baseline;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512:
      return "avx512";
    case CpuIsa::Avx2:
      return "avx2";
    case CpuIsa::Baseline:
      break;
  }
  return "baseline";
}

CpuVendor cpu_vendor() {
  static const CpuVendor vendor = [] {
#ifdef TSC_X86_ISAS
    __builtin_cpu_init();
    if (__builtin_cpu_is("amd")) return CpuVendor::Amd;
    if (__builtin_cpu_is("intel")) return CpuVendor::Intel;
#endif
    return CpuVendor::Other;
  }();
  return vendor;
}

int64_t l1_data_cache_bytes() {
  static const int64_t bytes = [] {
    constexpr int64_t kDefault = 32 * 1024;
#ifdef _SC_LEVEL1_DCACHE_SIZE
    const long reported = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    if (reported >= 16 * 1024 && reported <= 256 * 1024) return int64_t(reported);
#endif
    return kDefault;
  }();
  return bytes;
}

int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
    constexpr int64_t kDefault = 1024 * 1024;
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (reported >= 128 * 1024 && reported <= 16 * 1024 * 1024) return int64_t(reported);
#endif
    return kDefault;
  }();
  return bytes;
}

int64_t l3_cache_bytes() {
  static const int64_t bytes = [] {
    constexpr int64_t kDefault = 32 * 1024 * 1024;
    // Linux's view of the cache (what lscpu reports): glibc's sysconf said 320 MiB for the
    // Zen 4 VM's 32 MiB L3.
    std::ifstream level("/sys/devices/system/cpu/cpu0/cache/index3/level");
    std::ifstream size("/sys/devices/system/cpu/cpu0/cache/index3/size");
    int level_number = 0;
    int64_t kib = 0;
    char unit = 0;
    if (level >> level_number && level_number == 3 && size >> kib >> unit && unit == 'K' &&
        kib >= 1024 && kib <= int64_t(4) * 1024 * 1024) {
      return kib * 1024;
    }
    return kDefault;
  }();
  return bytes;
}

}  // namespace torch_sparse_conv
