// What the PostgreSQL store promises beyond the Store contract (store_contract_test.cpp): two
// nodes writing to one database at once. Each test opens two stores (node ids 1 and 2) on
// one schema of the run's PostgreSQL server (the ctest fixture postgres_start).
#include "store/postgresql/postgresql_store.hpp"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <thread>

#include "postgres_test_server.hpp"
#include "store/store_test_calls.hpp"

namespace parley::store {
namespace {

using test_calls::in_flight;
using test_calls::wait_for;

class two_nodes : public ::testing::Test {
 protected:
  two_nodes() {
    std::random_device rd;
    const std::string conninfo = test_support::postgres_database(
        std::to_string(rd()) + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (std::uint64_t node : {1, 2}) {
      postgresql_options o;
      o.conninfo = conninfo;
      o.node_id = node;
      (node == 1 ? a : b) = std::make_unique<postgresql_store>(o);
    }
  }

  registration user(store& s, const std::string& name) {
    sha256_digest h{};
    auto r = wait_for<registration>([&](auto done) { s.register_account({name, h}, done); });
    EXPECT_TRUE(r) << name;
    return r ? *r : registration{};
  }

  std::unique_ptr<postgresql_store> a, b;
};

TEST_F(two_nodes, appends_to_one_chat_from_both_get_every_seq_once) {
  const auto alice = user(*a, "alice");
  const auto bob = user(*b, "bob");
  // The pair's first messages from both nodes at once: one chat, not two.
  in_flight<send_outcome> first;
  a->send({alice.user, alice.device, "alice", {0, "bob"}, "a-first", "x", 1, 0, {}}, first.slot());
  b->send({bob.user, bob.device, "bob", {0, "alice"}, "b-first", "y", 1, 0, {}}, first.slot());
  ASSERT_TRUE(first.wait_until_completed(2));
  const auto firsts = first.all();
  ASSERT_TRUE(firsts[0] && firsts[1]);
  EXPECT_EQ(firsts[0]->chat, firsts[1]->chat);
  const chat_id chat = firsts[0]->chat;

  constexpr int per_node = 150;
  in_flight<send_outcome> sends;
  for (int i = 0; i < per_node; ++i) {
    a->send({alice.user, alice.device, "alice", {chat, {}}, "a" + std::to_string(i), "x", 1, 0, {}},
            sends.slot());
    b->send({bob.user, bob.device, "bob", {chat, {}}, "b" + std::to_string(i), "y", 1, 0, {}},
            sends.slot());
  }
  ASSERT_TRUE(sends.wait_until_completed(2 * per_node));
  std::set<std::uint64_t> seqs{firsts[0]->seq, firsts[1]->seq};
  for (const auto& r : sends.all()) {
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_TRUE(seqs.insert(r->seq).second) << "seq " << r->seq << " handed out twice";
  }
  ASSERT_EQ(seqs.size(), 2u + 2 * per_node);
  EXPECT_EQ(*seqs.begin(), 1u);
  EXPECT_EQ(*seqs.rbegin(), 2u + 2 * per_node) << "no gaps";
  auto log = wait_for<std::vector<shared_message>>(
      [&](auto done) { a->read_log(chat, 0, UINT64_MAX, 1000, SIZE_MAX, done); });
  ASSERT_TRUE(log);
  EXPECT_EQ(log->size(), seqs.size());
}

TEST_F(two_nodes, never_hand_out_one_one_time_prekey_twice) {
  const auto bob = user(*a, "bob");
  key_upload keys{bob.device, "identity", 7, prekey{1, "spk", "sig"}, {}};
  constexpr std::uint32_t count = 60;
  for (std::uint32_t i = 0; i < count; ++i) keys.one_time_prekeys.push_back({100 + i, "otk", {}});
  ASSERT_TRUE(wait_for<key_stock>([&](auto done) { a->upload_keys(keys, 500, done); }));

  in_flight<std::vector<key_bundle>> takes;
  for (std::uint32_t i = 0; i < count + 10; ++i) (i % 2 ? a : b)->take_key_bundles("bob", takes.slot());
  ASSERT_TRUE(takes.wait_until_completed(count + 10));
  std::set<std::uint32_t> handed;
  std::size_t without = 0;
  for (const auto& r : takes.all()) {
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_EQ(r->size(), 1u);
    if (!(*r)[0].one_time_prekey) {
      ++without;
      continue;
    }
    EXPECT_TRUE(handed.insert((*r)[0].one_time_prekey->id).second)
        << "prekey " << (*r)[0].one_time_prekey->id << " handed out twice";
  }
  EXPECT_EQ(handed.size(), count);
  EXPECT_EQ(without, 10u);
}

TEST_F(two_nodes, a_name_registered_on_both_at_once_is_taken_once) {
  in_flight<registration> regs;
  sha256_digest h{};
  for (int i = 0; i < 10; ++i) {
    a->register_account({"carol", h}, regs.slot());
    b->register_account({"carol", h}, regs.slot());
  }
  ASSERT_TRUE(regs.wait_until_completed(20));
  int ok = 0;
  for (const auto& r : regs.all()) {
    if (r) {
      ++ok;
    } else {
      EXPECT_EQ(r.error(), errc::username_taken) << r.error().message();
    }
  }
  EXPECT_EQ(ok, 1);
}

TEST_F(two_nodes, ids_differ_between_nodes_and_survive_a_restart) {
  const auto alice = user(*a, "alice");
  const auto bob = user(*a, "bob");
  auto m1 = wait_for<send_outcome>([&](auto done) {
    a->send({alice.user, alice.device, "alice", {0, "bob"}, "1", "x", 1, 0, {}}, done);
  });
  auto m2 = wait_for<send_outcome>([&](auto done) {
    b->send({bob.user, bob.device, "bob", {0, "alice"}, "2", "x", 1, 0, {}}, done);
  });
  ASSERT_TRUE(m1 && m2);
  EXPECT_NE(m1->id, m2->id);
  EXPECT_EQ((m1->id >> 12) & 1023, 1u) << "node 1's Snowflake";
  EXPECT_EQ((m2->id >> 12) & 1023, 2u) << "node 2's Snowflake";
}

}  // namespace
}  // namespace parley::store
