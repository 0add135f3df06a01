// A size limit in megabytes read from the environment (the caches' TSC_*_CACHE_MB).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>

namespace torch_sparse_conv {

// The value of `name` in megabytes, as bytes (`default_megabytes` where it is unset; a value
// below 0 counts as 0, one above 2^30 as 2^30).
inline size_t megabytes_from_env(const char* name, long long default_megabytes) {
  const char* megabytes = std::getenv(name);
  const long long parsed = megabytes ? std::strtoll(megabytes, nullptr, 10) : default_megabytes;
  return static_cast<size_t>(std::max(0LL, std::min(parsed, 1LL << 30))) << 20;
}

}  // namespace torch_sparse_conv
