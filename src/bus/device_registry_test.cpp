#include "bus/device_registry.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "bus/local/local_bus.hpp"

namespace parley::bus {
namespace {

// A test fake: counts what it is told.
class counting_endpoint final : public endpoint {
 public:
  void push_message(shared_envelope) override { ++messages; }
  void push_receipts(std::vector<store::watermark> marks) override { receipts += marks.size(); }
  void push_ephemeral(wire::encoded_frame) override { ++ephemeral; }
  void replaced() override { ++replacements; }
  void resync() override {}
  void pushes_may_be_lost() override {}
  int messages = 0;
  std::size_t receipts = 0;
  int ephemeral = 0;
  int replacements = 0;
};

TEST(device_registry, a_newer_connection_takes_the_device_and_keeps_it_on_the_older_detach) {
  device_registry r;
  auto first = std::make_shared<counting_endpoint>();
  auto second = std::make_shared<counting_endpoint>();
  EXPECT_EQ(r.attach(7, "alice", first, 100), nullptr);
  EXPECT_EQ(r.attach(7, "alice", first, 100), nullptr) << "attaching the same one again";
  EXPECT_EQ(r.attach(7, "alice", second, 200), first) << "the one it takes the place of";
  EXPECT_FALSE(r.detach(7, first.get())) << "the older connection's close changes nothing";
  EXPECT_EQ(r.find(7), second);
  EXPECT_EQ(r.find_attached_by(7, 199), nullptr) << "attached after that time";
  EXPECT_EQ(r.find_attached_by(7, 200), second);
  EXPECT_TRUE(r.detach(7, second.get()));
  EXPECT_EQ(r.find(7), nullptr);
  EXPECT_TRUE(r.of_user("alice").empty());
  EXPECT_EQ(r.size(), 0u);
}

TEST(device_registry, lookups_by_device_by_user_and_all) {
  device_registry r;
  auto a1 = std::make_shared<counting_endpoint>();
  auto a2 = std::make_shared<counting_endpoint>();
  auto b = std::make_shared<counting_endpoint>();
  r.attach(1, "alice", a1);
  r.attach(2, "alice", a2);
  r.attach(3, "bob", b);
  std::vector<device_id> absent;
  auto found = r.find_each({3, 9, 1, 8}, &absent);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0], b);
  EXPECT_EQ(found[1], a1);
  EXPECT_EQ(absent, (std::vector<device_id>{9, 8}));
  EXPECT_EQ(r.of_user("alice").size(), 2u);
  EXPECT_EQ(r.of_user("bob").size(), 1u);
  EXPECT_TRUE(r.of_user("carol").empty());
  EXPECT_EQ(r.all().size(), 3u);
  auto ids = r.ids();
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<device_id>{1, 2, 3}));
  // An endpoint that is gone (its connection freed) is not returned.
  a2.reset();
  EXPECT_EQ(r.of_user("alice").size(), 1u);
  EXPECT_EQ(r.find(2), nullptr);
}

// The user index views the names held by the device entries: it must follow every attach,
// re-attach and detach while both tables grow and rehash (ASan would catch a stale view).
TEST(device_registry, the_user_index_follows_attach_and_detach_through_rehashes) {
  device_registry r;
  const auto user_of = [](device_id d) {
    // Names both short (in the string's own buffer) and long (on the heap).
    return d % 2 == 0 ? "u" + std::to_string(d % 37)
                      : "a-longer-username-" + std::to_string(d % 37);
  };
  std::vector<std::shared_ptr<counting_endpoint>> eps;
  for (device_id d = 0; d < 2000; ++d) {
    eps.push_back(std::make_shared<counting_endpoint>());
    r.attach(d, user_of(d), eps.back());
  }
  for (device_id d = 0; d < 2000; d += 3) {  // a newer connection of the same device
    auto newer = std::make_shared<counting_endpoint>();
    EXPECT_EQ(r.attach(d, user_of(d), newer), eps[d]);
    eps[d] = newer;
  }
  for (device_id d = 0; d < 2000; d += 2) EXPECT_TRUE(r.detach(d, eps[d].get()));
  std::map<std::string, std::size_t> expected;
  for (device_id d = 1; d < 2000; d += 2) ++expected[user_of(d)];
  for (device_id d = 0; d < 2000; ++d) {
    EXPECT_EQ(r.of_user(user_of(d)).size(), expected[user_of(d)]) << user_of(d);
  }
  EXPECT_EQ(r.size(), 1000u);
  for (device_id d = 1; d < 2000; d += 2) EXPECT_TRUE(r.detach(d, eps[d].get()));
  for (device_id d = 0; d < 74; ++d) EXPECT_TRUE(r.of_user(user_of(d)).empty()) << user_of(d);
  EXPECT_EQ(r.size(), 0u);
}

// A device attached again under another name (not something a store hands out, but the
// registry must not keep a view of the old name) is found by the new name only.
TEST(device_registry, a_device_attached_under_another_name_moves_in_the_user_index) {
  device_registry r;
  auto first = std::make_shared<counting_endpoint>();
  auto second = std::make_shared<counting_endpoint>();
  r.attach(5, "a-name-longer-than-fifteen", first);
  r.attach(6, "a-name-longer-than-fifteen", first);
  EXPECT_EQ(r.attach(5, "short", second), first);
  EXPECT_EQ(r.of_user("a-name-longer-than-fifteen").size(), 1u) << "device 6 only";
  ASSERT_EQ(r.of_user("short").size(), 1u);
  EXPECT_EQ(r.of_user("short")[0], second);
  EXPECT_TRUE(r.detach(5, second.get()));
  EXPECT_TRUE(r.of_user("short").empty());
  EXPECT_EQ(r.of_user("a-name-longer-than-fifteen").size(), 1u);
}

TEST(local_bus, pushes_reach_connected_devices_and_a_replaced_one_is_told) {
  local_bus bus;
  auto old_alice = std::make_shared<counting_endpoint>();
  auto alice = std::make_shared<counting_endpoint>();
  auto bob = std::make_shared<counting_endpoint>();
  bus.attach(1, "alice", old_alice);
  bus.attach(1, "alice", alice);
  bus.attach(2, "bob", bob);
  EXPECT_EQ(old_alice->replacements, 1);
  EXPECT_EQ(bus.connected_devices(), 2u);
  bus.deliver_message({1, 2, 3}, nullptr);
  bus.deliver_ephemeral("bob", std::make_shared<const std::string>("typing"));
  bus.deliver_receipts({{2, store::watermark{}}, {2, store::watermark{}}, {5, store::watermark{}}});
  EXPECT_EQ(alice->messages, 1);
  EXPECT_EQ(bob->messages, 1);
  EXPECT_EQ(old_alice->messages, 0);
  EXPECT_EQ(bob->ephemeral, 1);
  EXPECT_EQ(alice->ephemeral, 0);
  EXPECT_EQ(bob->receipts, 2u);
  bus.detach(1, old_alice.get());
  EXPECT_EQ(bus.connected_devices(), 2u) << "the replaced connection's close keeps the device";
  bus.detach(1, alice.get());
  EXPECT_EQ(bus.connected_devices(), 1u);
}

}  // namespace
}  // namespace parley::bus
