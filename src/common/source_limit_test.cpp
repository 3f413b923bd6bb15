// Connections per source (source_limit.hpp): what a source is, the blocks that are not
// counted, and that a slot comes back.
#include "common/source_limit.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace parley {
namespace {

namespace ip = boost::asio::ip;

ip::address addr(const std::string& text) { return ip::make_address(text); }

TEST(source_limit, a_source_is_an_ipv4_address_or_an_ipv6_slash_64) {
  EXPECT_EQ(source_of(addr("192.0.2.7")), source_of(addr("192.0.2.7")));
  EXPECT_NE(source_of(addr("192.0.2.7")), source_of(addr("192.0.2.8")));
  EXPECT_EQ(source_of(addr("::ffff:192.0.2.7")), source_of(addr("192.0.2.7")))
      << "a dual-stack listener's view of an IPv4 client is that client";
  EXPECT_EQ(source_of(addr("2001:db8:1:2::1")), source_of(addr("2001:db8:1:2:ffff::9")))
      << "one /64: one source";
  EXPECT_NE(source_of(addr("2001:db8:1:2::1")), source_of(addr("2001:db8:1:3::1")));
  // 0.0.0.1 and the IPv6 prefix 0:0:0:1::/64 have the same bits, not the same family.
  EXPECT_NE(source_of(addr("0.0.0.1")), source_of(addr("0:0:0:1::")));
}

TEST(source_limit, blocks_are_parsed_strictly_and_contain_what_they_say) {
  const auto v4 = parse_address_block("10.1.0.0/16");
  EXPECT_TRUE(contains(v4, addr("10.1.255.3")));
  EXPECT_TRUE(contains(v4, addr("::ffff:10.1.0.1"))) << "mapped: as its IPv4 address";
  EXPECT_FALSE(contains(v4, addr("10.2.0.1")));
  EXPECT_FALSE(contains(v4, addr("::1")));
  const auto one = parse_address_block("192.0.2.1");
  EXPECT_TRUE(contains(one, addr("192.0.2.1")));
  EXPECT_FALSE(contains(one, addr("192.0.2.2"))) << "an address alone is a /32";
  const auto v6 = parse_address_block("2001:db8::/33");
  EXPECT_TRUE(contains(v6, addr("2001:db8:7fff::1")));
  EXPECT_FALSE(contains(v6, addr("2001:db8:8000::1"))) << "the 33rd bit";
  EXPECT_TRUE(contains(parse_address_block("0.0.0.0/0"), addr("203.0.113.9")));
  EXPECT_TRUE(contains(parse_address_block("::/0"), addr("2001:db8::1")));
  EXPECT_FALSE(contains(parse_address_block("::/0"), addr("203.0.113.9")))
      << "an IPv6 block holds no IPv4 address";
  const auto mapped = parse_address_block("::ffff:10.0.0.0/104");
  EXPECT_TRUE(contains(mapped, addr("10.1.2.3"))) << "an IPv4-mapped block is its IPv4 block";
  EXPECT_TRUE(contains(mapped, addr("::ffff:10.1.2.3")));
  EXPECT_FALSE(contains(mapped, addr("11.0.0.1")));

  for (const char* bad :
       {"", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.1/8", "10.0.0.0/x", "10.0.0.0/8/8",
        "example.org", "::1/129", "2001:db8::1/64", "10.0.0.0/-1", "10.0.0.0/ 8"}) {
    EXPECT_THROW((void)parse_address_block(bad), std::invalid_argument) << '"' << bad << '"';
  }
}

TEST(source_limit, counts_up_to_its_max_per_source_and_gives_slots_back) {
  source_limit limit(2, {parse_address_block("127.0.0.0/8")});
  {
    std::vector<source_limit::slot> local;
    for (int i = 0; i < 3; ++i) {
      auto held = limit.acquire(addr("127.0.0.5"));
      ASSERT_TRUE(held) << "an unlimited block";
      local.push_back(std::move(*held));
    }
    EXPECT_EQ(limit.sources(), 0u) << "an unlimited block is not counted";
  }
  auto a1 = limit.acquire(addr("198.51.100.1"));
  auto a2 = limit.acquire(addr("198.51.100.1"));
  ASSERT_TRUE(a1 && a2);
  EXPECT_FALSE(limit.acquire(addr("198.51.100.1"))) << "the third from one source";
  auto b = limit.acquire(addr("198.51.100.2"));
  EXPECT_TRUE(b) << "another source has its own";
  EXPECT_EQ(limit.sources(), 2u);
  a1->reset();
  auto a3 = limit.acquire(addr("198.51.100.1"));
  EXPECT_TRUE(a3) << "a slot given back is taken again";
  a2.reset();
  a3.reset();
  b.reset();
  EXPECT_EQ(limit.sources(), 0u) << "nothing is remembered of a source with none";

  // A slot gives back once: not again when reset twice, nor from its moved-from self.
  auto c = limit.acquire(addr("198.51.100.3"));
  auto d = limit.acquire(addr("198.51.100.3"));
  ASSERT_TRUE(c && d);
  source_limit::slot moved = std::move(*c);
  c->reset();
  EXPECT_FALSE(limit.acquire(addr("198.51.100.3"))) << "the moved-from slot gave nothing back";
  moved.reset();
  moved.reset();
  EXPECT_TRUE(limit.acquire(addr("198.51.100.3"))) << "one place back, not two:";
  auto e = limit.acquire(addr("198.51.100.3"));
  EXPECT_TRUE(e);
  EXPECT_FALSE(limit.acquire(addr("198.51.100.3"))) << "d and e hold the two";

  source_limit off(0, {});
  std::vector<source_limit::slot> many;
  for (int i = 0; i < 5; ++i) {
    auto held = off.acquire(addr("198.51.100.1"));
    ASSERT_TRUE(held);
    many.push_back(std::move(*held));
  }
  EXPECT_EQ(off.sources(), 0u) << "0: no limit, nothing counted";
}

}  // namespace
}  // namespace parley
