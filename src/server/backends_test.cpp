// What the backends take from the config (without opening them).
#include "server/backends.hpp"

#include <gtest/gtest.h>

namespace parley::server {
namespace {

TEST(backends, the_embedded_store_takes_max_pending_writes_as_configured) {
  config c;
  EXPECT_EQ(store_max_pending(c), 65'536u);
  c.max_pending_writes = 1'000'000;
  EXPECT_EQ(store_max_pending(c), 1'000'000u);
}

TEST(backends, a_postgresql_store_lets_at_most_8192_writes_wait) {
  config c;
  c.store_url = "postgresql://parley@127.0.0.1:5432/parley";
  EXPECT_EQ(store_max_pending(c), 8'192u);  // the default, 65,536, is capped
  c.max_pending_writes = 8'193;
  EXPECT_EQ(store_max_pending(c), 8'192u);
  c.max_pending_writes = 8'192;
  EXPECT_EQ(store_max_pending(c), 8'192u);
  c.max_pending_writes = 100;
  EXPECT_EQ(store_max_pending(c), 100u);  // a smaller value is kept
}

}  // namespace
}  // namespace parley::server
