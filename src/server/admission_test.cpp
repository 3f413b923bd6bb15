// Admission (admission.hpp) with a limit per source: one host cannot take every
// unauthenticated slot, and a slot comes back when its connection authenticates or closes.
#include "server/admission.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace parley::server {
namespace {

namespace ip = boost::asio::ip;

ip::address addr(const char* text) { return ip::make_address(text); }

TEST(admission, one_source_cannot_take_every_unauthenticated_slot) {
  connection_set connections;
  metrics stats;
  admission admit(100, 10, 1 << 20, connections, stats, 3, {parse_address_block("10.0.0.0/8")});
  const auto host = addr("198.51.100.1");
  auto t1 = admit.admit(host);
  auto t2 = admit.admit(host);
  auto t3 = admit.admit(host);
  ASSERT_TRUE(t1 && t2 && t3);
  EXPECT_FALSE(admit.admit(host)) << "the fourth from one host";
  EXPECT_EQ(stats.connections_refused_per_address.load(), 1u);
  EXPECT_EQ(admit.open(), 3u) << "a refusal holds nothing";
  EXPECT_TRUE(admit.admit(addr("198.51.100.2"))) << "another host gets in";

  t1.authenticated();
  auto t4 = admit.admit(host);
  EXPECT_TRUE(t4) << "an authenticated connection no longer counts against its source";
  EXPECT_FALSE(admit.admit(host));
  t2 = admission::ticket{};  // closed
  auto t5 = admit.admit(host);
  EXPECT_TRUE(t5) << "a closed connection's slot is free";
  EXPECT_FALSE(admit.admit(host));
  t1 = admission::ticket{};  // the authenticated one closes: it had given its slot back
  EXPECT_FALSE(admit.admit(host)) << "t3, t4 and t5 hold the host's three";
  EXPECT_EQ(admit.sources(), 1u);
  EXPECT_EQ(stats.connections_refused_per_address.load(), 4u);

  // Unlimited blocks and unknown addresses count only against max_unauthenticated (10).
  std::vector<admission::ticket> proxy;
  for (int i = 0; i < 6; ++i) {
    proxy.push_back(admit.admit(addr("10.9.9.9")));
    EXPECT_TRUE(proxy.back()) << i;
  }
  auto unknown = admit.admit(std::nullopt);
  EXPECT_TRUE(unknown);
  EXPECT_FALSE(admit.admit(addr("10.9.9.9"))) << "the 11th unauthenticated of 10";
  EXPECT_EQ(stats.connections_refused_per_address.load(), 4u) << "not a per-address refusal";
}

}  // namespace
}  // namespace parley::server
