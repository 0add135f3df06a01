// The instruction sets the CPU kernels are compiled for, and the one this process uses.
//
// One mechanism for every hot loop of both families: the loop is written once (a template or
// an always-inline function), compiled once per instruction set into functions marked
// TSC_TARGET_AVX512 / TSC_TARGET_AVX2 / nothing, and `isa_variant` picks the function for
// `cpu_isa()`. A source build thus runs the widest vectors the processor has without
// -march=native. TSC_CPU_ISA=avx2|baseline caps the choice (tests, comparisons);
// TSC_NO_AVX512=1 is the same as TSC_CPU_ISA=avx2.
#pragma once

#include <cstdint>

namespace torch_sparse_conv {

enum class CpuIsa { Baseline, Avx2, Avx512 };

// Decided once per process: what the processor supports (AVX-512 means F, VL, BW, CD and
// DQ, x86-64-v4; AVX2 means x86-64-v3: AVX2, FMA, BMI2), capped by the environment.
CpuIsa detect_cpu_isa();
inline CpuIsa cpu_isa() {
  static const CpuIsa isa = detect_cpu_isa();
  return isa;
}
const char* cpu_isa_name(CpuIsa isa);  // "avx512", "avx2" or "baseline"

// Who made the processor (CPUID's vendor string), decided once; Other off x86-64 or with
// another compiler. The 'auto' rule's constants are fitted per vendor (sparse_filter/method.h).
enum class CpuVendor { Amd, Intel, Other };
CpuVendor cpu_vendor();

// Bytes of a core's level-1 data cache, as the C library reports it (sysconf), read once:
// 32 KiB on AMD Zen 4, 48 KiB on Intel since Ice Lake. Where it is not reported, or is
// outside 16-256 KiB, 32 KiB. The kernels size the input they keep in L1 by it.
int64_t l1_data_cache_bytes();
// The same for a core's level-2 cache: 1 MiB on AMD Zen 4, 2 MiB on the Intel Xeon VM; 1 MiB
// where it is not reported or is outside 128 KiB-16 MiB.
int64_t l2_cache_bytes();
// The level-3 cache the cores share, as Linux reports it (/sys/devices/system/cpu), read
// once: 32 MiB on the Zen 4 VM; 32 MiB where it is not reported or is outside 1 MiB-4 GiB.
int64_t l3_cache_bytes();

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TSC_X86_ISAS 1
#define TSC_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#define TSC_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#else
#define TSC_TARGET_AVX512
#define TSC_TARGET_AVX2
#endif

// The variant of a function for cpu_isa(), from its three compilations (on other platforms
// all three are the baseline one).
template <typename Function>
Function isa_variant(Function avx512, Function avx2, Function baseline) {
  switch (cpu_isa()) {
    case CpuIsa::Avx512:
      return avx512;
    case CpuIsa::Avx2:
      return avx2;
    case CpuIsa::Baseline:
      break;
  }
  return baseline;
}

}  // namespace torch_sparse_conv
