#pragma once
// The message of the tpq::Error that `f` throws, after checking its code; a test failure (and "") when `f`
// returns normally or throws something else than a tpq::Error (which escapes to the test).
#include <gtest/gtest.h>

#include <string>

#include "tpq/core/error.hpp"

namespace tpq::test {

template <typename F>
std::string error_of(F&& f, ErrorCode code) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return {};
}

}  // namespace tpq::test
