#pragma once
// Process-wide allocator setting for long runs: keep freed memory for reuse.
//
//   int main() {
//     salient::retain_freed_memory();  // once, before the first model runs
//     auto model = salient::Model::load("model.pt");
//     ...
//   }
//
// LibTorch frees every activation of a forward and allocates it again on the next one. glibc
// returns blocks above its mmap threshold (128 KiB to 32 MiB, moving) to the system on free,
// so the next pass faults every page of them in again: on some virtual machines that costs
// more than the arithmetic (docs/BENCHMARKS.md, Allocator). This call has glibc serve every
// block from its heap and keep what is freed there. The process's resident memory then stays
// at its peak instead of dropping between passes (a 2,000-image `salient batch` peaked at
// 480 MiB, 459 MiB at 200 images: docs/BENCHMARKS.md). The `salient` CLI
// calls it; a library never changes allocator settings by itself.
namespace salient {

// Returns true when the setting was applied; false where the C library is not glibc, or
// where the environment already configures malloc (MALLOC_MMAP_MAX_, MALLOC_MMAP_THRESHOLD_,
// MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_ or GLIBC_TUNABLES set): the user's choice wins.
bool retain_freed_memory();

}  // namespace salient
