#pragma once
// Two kernels of known resource use for the occupancy table's test (test_occupancy.cpp), compiled by nvcc apart
// from it (the test's headers bring fmt, which nvcc does not compile here).

namespace tpq::test {

// A kernel limited only by its block size.
const void* light_kernel();
// 40 KB of static shared memory: at most 5 blocks on an SM of 228 KB, whatever the block size.
const void* shared_kernel();

}  // namespace tpq::test
