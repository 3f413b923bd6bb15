// The Store contract, run against every backend: RocksDB (embedded) and PostgreSQL (cluster;
// the server the CTest fixture postgres_start runs, named by PARLEY_TEST_POSTGRES_DIR, one
// database per test). What only the RocksDB store promises (its threads, caches, compaction,
// the cost of a login) is in rocksdb/rocksdb_store_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <iostream>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include "store/postgresql/postgresql_store.hpp"
#include "store/rocksdb/rocksdb_store.hpp"
#include "postgres_test_server.hpp"
#include "store/store_test_calls.hpp"
#include "temp_dir.hpp"

namespace parley::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr auto delivered = message_status::delivered;
constexpr auto read = message_status::read;
constexpr auto no_bound = std::numeric_limits<std::uint64_t>::max();
constexpr auto no_byte_limit = std::numeric_limits<std::size_t>::max();

using test_calls::completion_deadline;
using test_calls::in_flight;
using test_calls::wait_for;
using test_calls::writer_gate;

// Receipts, watermarks and positions as text, sorted, so that a failed comparison shows both
// sides whole and order does not matter (the contract gives none). at_ms is left out: it is
// server time, checked apart.
std::string status_name(message_status s) {
  switch (s) {
    case message_status::sent:
      return "sent";
    case message_status::delivered:
      return "delivered";
    case message_status::read:
      return "read";
  }
  return "status " + std::to_string(static_cast<int>(s));
}

std::string mark(chat_id chat, const std::string& user, message_status s, std::uint64_t up_to) {
  return "chat " + std::to_string(chat) + ": " + user + " " + status_name(s) + " up to " +
         std::to_string(up_to);
}

std::string receipt(device_id to, chat_id chat, const std::string& user, message_status s,
                    std::uint64_t up_to) {
  return "to device " + std::to_string(to) + ", " + mark(chat, user, s, up_to);
}

std::string position(chat_id chat, std::uint64_t cursor, std::uint64_t head) {
  return "chat " + std::to_string(chat) + ": cursor " + std::to_string(cursor) + ", head " +
         std::to_string(head);
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<std::string> described(const std::vector<receipt_delivery>& receipts) {
  std::vector<std::string> out;
  for (const auto& r : receipts) {
    out.push_back(receipt(r.device, r.mark.chat, r.mark.user, r.mark.status, r.mark.up_to));
    EXPECT_GT(r.mark.at_ms, 0u) << out.back();
  }
  return sorted(out);
}

std::vector<std::string> described(const std::vector<watermark>& marks) {
  std::vector<std::string> out;
  for (const auto& m : marks) out.push_back(mark(m.chat, m.user, m.status, m.up_to));
  return sorted(out);
}

std::vector<std::string> described(const std::vector<chat_position>& positions) {
  std::vector<std::string> out;
  for (const auto& p : positions) out.push_back(position(p.chat, p.cursor, p.head));
  return sorted(out);
}

// What a test may ask of a backend beyond its defaults; each backend maps it to its options.
struct tuning {
  std::size_t max_pending = 0;                 // 0: the backend's default
  std::chrono::milliseconds dedupe_window{0};  // 0: the backend's default
  std::function<void()> after_commit;          // runs on the writer after each group commit
};

struct backend {
  const char* name;
  std::function<std::unique_ptr<store>(const fs::path& dir, const tuning& t)> open;
  // Whether its backlog() checks what is above a cursor (chat_position::own_only): the
  // PostgreSQL store does, where a read of the log is a round trip; the RocksDB store leaves
  // it to the drain's read.
  bool checks_own_only = false;
};

void PrintTo(const backend& b, std::ostream* os) { *os << b.name; }

std::vector<backend> backends() {
  return {{"rocksdb",
           [](const fs::path& dir, const tuning& t) {
             rocksdb_options o;
             o.path = dir;
             o.sync = true;
             if (t.max_pending != 0) o.max_pending = t.max_pending;
             if (t.dedupe_window != 0ms) o.dedupe_window = t.dedupe_window;
             if (t.after_commit)
               o.on_commit = [f = t.after_commit](std::chrono::nanoseconds, std::size_t) { f(); };
             return std::make_unique<rocksdb_store>(o);
           }},
          {"postgresql",
           [](const fs::path& dir, const tuning& t) {
             postgresql_options o;
             // A database per test directory: a reopen finds the same one.
             o.conninfo = test_support::postgres_database(dir.filename().string());
             o.sync = true;
             // Two writers: the contract holds whichever writer a request goes to.
             o.writers = 2;
             if (t.max_pending != 0) o.max_pending = t.max_pending;
             if (t.dedupe_window != 0ms) o.dedupe_window = t.dedupe_window;
             if (t.after_commit)
               o.on_commit = [f = t.after_commit](std::chrono::nanoseconds, std::size_t) { f(); };
             return std::make_unique<postgresql_store>(o);
           },
           true}};
}

// A registered user with its (only) device.
struct person {
  user_id user = 0;
  device_id device = 0;
  std::string name;
};

chat_ref by_peer(std::string name) { return {0, std::move(name)}; }
chat_ref by_id(chat_id chat) { return {chat, {}}; }

class store_contract : public ::testing::TestWithParam<backend> {
 protected:
  void SetUp() override { reopen(); }
  void TearDown() override { db_.reset(); }
  void reopen() {
    db_.reset();
    db_ = GetParam().open(dir_.path(), tuning_);
  }

  person register_user(const std::string& name) {
    sha256_digest h{};
    h[0] = static_cast<std::uint8_t>(name.size());
    auto r = wait_for<registration>([&](auto done) { db_->register_account({name, h}, done); });
    EXPECT_TRUE(r) << name;
    return r ? person{r->user, r->device, name} : person{};
  }

  send_request request(const person& from, chat_ref to, const std::string& client_id,
                       const std::string& payload = "hi", std::uint32_t cipher_type = 1,
                       std::uint32_t registration_id = 0) {
    return {from.user, from.device, from.name,   std::move(to),
            client_id, payload,     cipher_type, registration_id, {}};
  }

  result<send_outcome> send(const person& from, chat_ref to, const std::string& client_id,
                            const std::string& payload = "hi", std::uint32_t cipher_type = 1,
                            std::uint32_t registration_id = 0) {
    auto r = request(from, std::move(to), client_id, payload, cipher_type, registration_id);
    return wait_for<send_outcome>([&](auto done) { db_->send(r, done); });
  }

  // Sends that must succeed; returns the chat they went to.
  chat_id send_n(const person& from, chat_ref to, int n, const std::string& prefix) {
    chat_id chat = 0;
    for (int i = 0; i < n; ++i) {
      auto m = send(from, to, prefix + std::to_string(i));
      EXPECT_TRUE(m) << prefix << i;
      if (m) chat = m->chat;
    }
    return chat;
  }

  result<watermark_moves> ack_moves(const person& p, std::vector<cursor_update> cursors) {
    return wait_for<watermark_moves>([&](auto done) { db_->ack(p.device, p.user, cursors, done); });
  }
  result<watermark_moves> read_moves(const person& p, chat_id chat, std::uint64_t up_to) {
    return wait_for<watermark_moves>([&](auto done) { db_->mark_read(p.user, chat, up_to, done); });
  }
  // The 1:1 receipts of an ack or a read (groups' are merged: group_receipts).
  static result<std::vector<receipt_delivery>> receipts_of(result<watermark_moves> r) {
    if (!r) return r.error();
    return std::move(r->receipts);
  }
  result<std::vector<receipt_delivery>> ack(const person& p, std::vector<cursor_update> cursors) {
    return receipts_of(ack_moves(p, std::move(cursors)));
  }
  result<std::vector<receipt_delivery>> mark_read(const person& p, chat_id chat,
                                                  std::uint64_t up_to) {
    return receipts_of(read_moves(p, chat, up_to));
  }

  // The device's stored cursor in `chat` (all ones, and a failure, if it cannot be read).
  std::uint64_t cursor(const person& p, chat_id chat) {
    auto r = wait_for<std::uint64_t>(
        [&](auto done) { db_->device_cursor(p.device, p.user, chat, done); });
    EXPECT_TRUE(r) << p.name;
    return r ? *r : ~std::uint64_t{0};
  }

  result<void> pass_own(const person& p, std::vector<cursor_update> cursors) {
    return wait_for<void>(
        [&](auto done) { db_->pass_own_entries(p.device, p.user, cursors, done); });
  }

  device_backlog backlog_of(const person& p, std::uint64_t receipts_since = 0) {
    auto r = wait_for<device_backlog>(
        [&](auto done) { db_->backlog(p.device, p.user, receipts_since, done); });
    EXPECT_TRUE(r) << p.name;
    return r ? *r : device_backlog{};
  }

  std::vector<shared_message> log_of(chat_id chat, std::uint64_t after = 0,
                                     std::uint64_t up_to = no_bound, std::size_t limit = 1000,
                                     std::size_t max_bytes = no_byte_limit) {
    auto r = wait_for<std::vector<shared_message>>(
        [&](auto done) { db_->read_log(chat, after, up_to, limit, max_bytes, done); });
    EXPECT_TRUE(r);
    return r ? *r : std::vector<shared_message>{};
  }

  static std::vector<std::uint64_t> seqs(const std::vector<shared_message>& log) {
    std::vector<std::uint64_t> out;
    for (const auto& m : log) out.push_back(m->seq);
    return out;
  }

  static std::vector<std::uint64_t> seqs(const history_page& page) {
    std::vector<std::uint64_t> out;
    for (const auto& m : page.messages) out.push_back(m.seq);
    return out;
  }

  result<history_page> history(const person& p, chat_ref chat, std::uint64_t before = 0,
                               std::size_t limit = 100, std::size_t max_bytes = no_byte_limit) {
    return wait_for<history_page>(
        [&](auto done) { db_->history(p.user, chat, before, limit, max_bytes, done); });
  }

  result<status_report> report_of(const person& p, chat_id chat, std::uint64_t seq,
                                  bool detail = false) {
    return wait_for<status_report>(
        [&](auto done) { db_->status(p.user, chat, seq, detail, done); });
  }
  result<message_status> status_of(const person& p, chat_id chat, std::uint64_t seq) {
    auto r = report_of(p, chat, seq);
    if (!r) return r.error();
    return r->status;
  }

  result<std::vector<bool>> shared(const person& p, std::vector<std::string> names) {
    return wait_for<std::vector<bool>>(
        [&](auto done) { db_->shared_chats(p.user, std::move(names), done); });
  }

  // Public keys need no meaning here: the store keeps bytes; the server checks shapes and
  // signatures before it calls the store.
  static key_upload keys_for(const person& p, const std::string& identity,
                             std::uint32_t registration_id, bool with_signed_prekey,
                             std::uint32_t first_id, std::uint32_t count) {
    key_upload u{p.device, identity, registration_id, std::nullopt, {}};
    if (with_signed_prekey) u.signed_prekey = prekey{1, "spk-" + identity, "sig-" + identity};
    for (std::uint32_t i = 0; i < count; ++i)
      u.one_time_prekeys.push_back({first_id + i, "otk-" + std::to_string(first_id + i), {}});
    return u;
  }

  result<key_stock> upload(key_upload u, std::size_t max_held = 500) {
    return wait_for<key_stock>([&](auto done) { db_->upload_keys(u, max_held, done); });
  }

  result<std::vector<key_bundle>> take(const std::string& name, bool take_one_time = true) {
    return wait_for<std::vector<key_bundle>>(
        [&](auto done) { db_->take_key_bundles(name, take_one_time, done); });
  }

  test_support::temp_dir dir_{"parley_store_test_"};
  tuning tuning_;  // set it, then reopen()
  std::unique_ptr<store> db_;
};

// --- accounts and devices ------------------------------------------------------------------

TEST_P(store_contract, register_then_find) {
  auto alice = register_user("alice");
  auto dev = wait_for<device>([&](auto done) { db_->find_device(alice.device, done); });
  ASSERT_TRUE(dev);
  EXPECT_EQ(dev->id, alice.device);
  EXPECT_EQ(dev->user, alice.user);
  EXPECT_EQ(dev->username, "alice");
  EXPECT_EQ(dev->token_hash[0], 5);
  EXPECT_FALSE(dev->keys.has_keys);
  EXPECT_FALSE(dev->hide_last_seen);
  auto acct = wait_for<account>([&](auto done) { db_->find_account("alice", done); });
  ASSERT_TRUE(acct);
  EXPECT_EQ(acct->user, alice.user);
  EXPECT_EQ(acct->username, "alice");
  EXPECT_EQ(acct->devices, std::vector<device_id>{alice.device});
}

TEST_P(store_contract, duplicate_username_is_refused) {
  register_user("alice");
  auto again = wait_for<registration>([&](auto done) {
    db_->register_account({"alice", {}}, done);
  });
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error(), errc::username_taken);
}

TEST_P(store_contract, unknown_device_and_account_are_not_found) {
  auto dev = wait_for<device>([&](auto done) { db_->find_device(999, done); });
  EXPECT_EQ(dev.error(), errc::not_found);
  auto acct = wait_for<account>([&](auto done) { db_->find_account("ghost", done); });
  EXPECT_EQ(acct.error(), errc::not_found);
}

TEST_P(store_contract, the_first_unknown_user_is_named_in_the_order_given) {
  register_user("alice");
  register_user("bob");
  auto first_unknown = [&](std::vector<std::string> names) {
    auto r =
        wait_for<std::string>([&](auto done) { db_->first_unknown_user(std::move(names), done); });
    EXPECT_TRUE(r);
    return r ? *r : std::string("(failed)");
  };
  EXPECT_EQ(first_unknown({"alice", "zed", "bob", "amy"}), "zed");
  EXPECT_EQ(first_unknown({"amy", "zed"}), "amy");
  EXPECT_EQ(first_unknown({"bob", "alice", "bob"}), "");
  EXPECT_EQ(first_unknown({}), "");
  EXPECT_EQ(first_unknown({"alice", "we\"ird,\\name}"}), "we\"ird,\\name}");  // quoted
}

TEST_P(store_contract, privacy_is_stored_and_survives_a_reopen) {
  auto alice = register_user("alice");
  auto hidden = [&] {
    auto dev = wait_for<device>([&](auto done) { db_->find_device(alice.device, done); });
    EXPECT_TRUE(dev);
    return dev && dev->hide_last_seen;
  };
  EXPECT_FALSE(hidden());
  ASSERT_TRUE(wait_for<void>([&](auto done) { db_->set_privacy(alice.user, true, done); }));
  EXPECT_TRUE(hidden());
  reopen();
  EXPECT_TRUE(hidden());
  ASSERT_TRUE(wait_for<void>([&](auto done) { db_->set_privacy(alice.user, false, done); }));
  EXPECT_FALSE(hidden());
}

TEST_P(store_contract, a_fresh_store_is_healthy_and_idle) {
  const auto h = db_->health();
  EXPECT_TRUE(h.writable);
  EXPECT_EQ(h.reason, "");
  register_user("alice");
  EXPECT_EQ(db_->pending_writes(), 0u);
}

// --- keys ----------------------------------------------------------------------------------

TEST_P(store_contract, keys_are_uploaded_then_taken_one_prekey_per_fetch) {
  auto bob = register_user("bob");
  auto first = upload(keys_for(bob, "id-1", 7, false, 1, 3));
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error(), errc::missing_signed_prekey);

  auto stock = upload(keys_for(bob, "id-1", 7, true, 1, 3));
  ASSERT_TRUE(stock);
  EXPECT_EQ(stock->one_time_prekeys, 3u);
  EXPECT_FALSE(stock->identity_replaced);
  auto dev = wait_for<device>([&](auto done) { db_->find_device(bob.device, done); });
  ASSERT_TRUE(dev);
  EXPECT_TRUE(dev->keys.has_keys);
  EXPECT_EQ(dev->keys.one_time_prekeys, 3u);
  EXPECT_EQ(dev->keys.registration_id, 7u);

  for (std::uint32_t i = 1; i <= 3; ++i) {
    auto b = take("bob");
    ASSERT_TRUE(b);
    ASSERT_EQ(b->size(), 1u);
    EXPECT_EQ((*b)[0].device, bob.device);
    EXPECT_EQ((*b)[0].identity_key, "id-1");
    EXPECT_EQ((*b)[0].registration_id, 7u);
    EXPECT_EQ((*b)[0].signed_prekey.signature, "sig-id-1");
    ASSERT_TRUE((*b)[0].one_time_prekey);
    EXPECT_EQ((*b)[0].one_time_prekey->id, i);  // oldest first
    EXPECT_EQ((*b)[0].remaining, 3 - i);
  }
  // Exhausted: the bundle is still served, without a one-time prekey (as Signal does).
  auto empty = take("bob");
  ASSERT_TRUE(empty);
  EXPECT_FALSE((*empty)[0].one_time_prekey);
  EXPECT_EQ((*empty)[0].remaining, 0u);

  // A top-up (no signed prekey needed for the same identity) survives a reopen.
  ASSERT_TRUE(upload(keys_for(bob, "id-1", 7, false, 4, 2)));
  reopen();
  auto after = take("bob");
  ASSERT_TRUE(after);
  ASSERT_TRUE((*after)[0].one_time_prekey);
  EXPECT_EQ((*after)[0].one_time_prekey->id, 4u);
  EXPECT_EQ((*after)[0].remaining, 1u);
}

// What the server asks for past a pair's one-time prekey budget: the bundle, and the stock
// left as it was.
TEST_P(store_contract, a_fetch_that_takes_no_one_time_prekey_leaves_the_stock) {
  auto bob = register_user("bob");
  ASSERT_TRUE(upload(keys_for(bob, "id-1", 7, true, 1, 2)));
  for (int i = 0; i < 3; ++i) {
    auto b = take("bob", false);
    ASSERT_TRUE(b);
    ASSERT_EQ(b->size(), 1u);
    EXPECT_EQ((*b)[0].identity_key, "id-1");
    EXPECT_EQ((*b)[0].signed_prekey.signature, "sig-id-1");
    EXPECT_FALSE((*b)[0].one_time_prekey);
    EXPECT_EQ((*b)[0].remaining, 2u);
  }
  auto taken = take("bob");
  ASSERT_TRUE(taken);
  ASSERT_TRUE((*taken)[0].one_time_prekey);
  EXPECT_EQ((*taken)[0].one_time_prekey->id, 1u);
  EXPECT_EQ((*taken)[0].remaining, 1u);
}

TEST_P(store_contract, bundles_of_a_user_without_keys_or_of_nobody_are_refused) {
  register_user("bob");
  auto none = take("bob");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), errc::no_keys);
  auto nobody = take("nobody");
  ASSERT_FALSE(nobody);
  EXPECT_EQ(nobody.error(), errc::unknown_user);
}

TEST_P(store_contract, concurrent_fetches_never_share_a_one_time_prekey) {
  auto bob = register_user("bob");
  ASSERT_TRUE(upload(keys_for(bob, "id-1", 7, true, 1, 100)));
  std::vector<std::thread> threads;
  std::mutex m;
  std::multiset<std::uint32_t> taken;
  int without = 0;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 8; ++i) {
        auto b = take("bob");
        ASSERT_TRUE(b);
        std::lock_guard lock(m);
        if ((*b)[0].one_time_prekey) {
          taken.insert((*b)[0].one_time_prekey->id);
        } else {
          ++without;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(taken.size(), 100u);
  EXPECT_EQ(std::set<std::uint32_t>(taken.begin(), taken.end()).size(), 100u);  // no repeats
  EXPECT_EQ(without, 16 * 8 - 100);
}

TEST_P(store_contract, uploads_beyond_the_held_limit_are_refused_whole) {
  auto bob = register_user("bob");
  ASSERT_TRUE(upload(keys_for(bob, "id-1", 7, true, 1, 4), 5));
  auto over = upload(keys_for(bob, "id-1", 7, false, 10, 2), 5);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error(), errc::too_many_prekeys);
  // Re-sending held ids replaces them instead of adding.
  auto same = upload(keys_for(bob, "id-1", 7, false, 3, 2), 5);
  ASSERT_TRUE(same);
  EXPECT_EQ(same->one_time_prekeys, 4u);
  auto full = upload(keys_for(bob, "id-1", 7, false, 5, 1), 5);  // exactly at the limit
  ASSERT_TRUE(full);
  EXPECT_EQ(full->one_time_prekeys, 5u);
}

TEST_P(store_contract, a_new_identity_replaces_every_key_of_the_device) {
  auto bob = register_user("bob");
  ASSERT_TRUE(upload(keys_for(bob, "id-1", 7, true, 1, 3)));
  auto bare = upload(keys_for(bob, "id-2", 9, false, 1, 1));
  ASSERT_FALSE(bare);
  EXPECT_EQ(bare.error(), errc::missing_signed_prekey);
  auto replaced = upload(keys_for(bob, "id-2", 9, true, 50, 1));
  ASSERT_TRUE(replaced);
  EXPECT_TRUE(replaced->identity_replaced);
  EXPECT_EQ(replaced->one_time_prekeys, 1u);  // the old install's prekeys are gone
  auto b = take("bob");
  ASSERT_TRUE(b);
  EXPECT_EQ((*b)[0].identity_key, "id-2");
  EXPECT_EQ((*b)[0].one_time_prekey->id, 50u);
}

// --- send ----------------------------------------------------------------------------------

TEST_P(store_contract, send_appends_once_per_chat_with_seq_from_one) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto m1 = send(alice, by_peer("bob"), "c1", "one", 1);
  auto m2 = send(alice, by_peer("bob"), "c2", "two", 3);
  auto m3 = send(bob, by_peer("alice"), "c1", "three");  // same client id, other device: distinct
  auto other = send(alice, by_peer("carol"), "c3", "elsewhere");
  ASSERT_TRUE(m1 && m2 && m3 && other);
  EXPECT_NE(m1->chat, 0u);
  EXPECT_EQ(m2->chat, m1->chat);
  EXPECT_EQ(m3->chat, m1->chat) << "one chat for a pair of users, whichever way";
  EXPECT_NE(other->chat, m1->chat);
  EXPECT_EQ(m1->seq, 1u);
  EXPECT_EQ(m2->seq, 2u);
  EXPECT_EQ(m3->seq, 3u);
  EXPECT_EQ(other->seq, 1u) << "each chat has its own sequence";
  EXPECT_LT(m1->id, m2->id);
  EXPECT_LT(m2->id, m3->id);
  EXPECT_FALSE(m1->duplicate || m2->duplicate || m3->duplicate || other->duplicate);

  // The recipients are the other member's devices (the sender has no other device).
  EXPECT_EQ(m1->recipients, std::vector<device_id>{bob.device});
  EXPECT_EQ(m3->recipients, std::vector<device_id>{alice.device});
  EXPECT_EQ(other->recipients, std::vector<device_id>{carol.device});

  // The appended entry, as it will be pushed.
  ASSERT_TRUE(m2->message);
  const chat_message& e = *m2->message;
  EXPECT_EQ(e.chat, m1->chat);
  EXPECT_EQ(e.seq, 2u);
  EXPECT_EQ(e.id, m2->id);
  EXPECT_EQ(e.sender, alice.user);
  EXPECT_EQ(e.sender_device, alice.device);
  EXPECT_EQ(e.sender_name, "alice");
  EXPECT_EQ(e.sent_at_ms, m2->sent_at_ms);
  EXPECT_GT(e.sent_at_ms, 0u);
  EXPECT_EQ(e.payload, "two");
  EXPECT_EQ(e.cipher_type, 3u);

  EXPECT_EQ(seqs(log_of(m1->chat)), (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(seqs(log_of(other->chat)), (std::vector<std::uint64_t>{1}));
}

TEST_P(store_contract, a_chat_named_by_id_takes_sends_from_its_members_only) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto first = send(alice, by_peer("bob"), "c1");
  ASSERT_TRUE(first);
  const chat_id ab = first->chat;

  auto from_bob = send(bob, by_id(ab), "c2", "by id");
  ASSERT_TRUE(from_bob);
  EXPECT_EQ(from_bob->chat, ab);
  EXPECT_EQ(from_bob->seq, 2u);
  EXPECT_EQ(from_bob->recipients, std::vector<device_id>{alice.device});
  auto from_alice = send(alice, by_id(ab), "c3");
  ASSERT_TRUE(from_alice);
  EXPECT_EQ(from_alice->seq, 3u);
  EXPECT_EQ(from_alice->recipients, std::vector<device_id>{bob.device});

  auto outsider = send(carol, by_id(ab), "c4");
  ASSERT_FALSE(outsider);
  EXPECT_EQ(outsider.error(), errc::not_found);
  auto no_such_chat = send(alice, by_id(ab + 1'000'003), "c5");
  ASSERT_FALSE(no_such_chat);
  EXPECT_EQ(no_such_chat.error(), errc::not_found);
  EXPECT_EQ(seqs(log_of(ab)), (std::vector<std::uint64_t>{1, 2, 3})) << "nothing appended";
  // Nothing was recorded for the refused client ids either.
  auto retry = send(carol, by_peer("alice"), "c4");
  ASSERT_TRUE(retry);
  EXPECT_FALSE(retry->duplicate);
  EXPECT_NE(retry->chat, ab);
}

TEST_P(store_contract, send_to_unknown_user_or_to_oneself_fails_and_stores_nothing) {
  auto alice = register_user("alice");
  auto nobody = send(alice, by_peer("nobody"), "c1");
  ASSERT_FALSE(nobody);
  EXPECT_EQ(nobody.error(), errc::unknown_user);
  auto self = send(alice, by_peer("alice"), "c2");
  ASSERT_FALSE(self);
  EXPECT_EQ(self.error(), errc::self_message);
  // The same client ids work afterwards for a real recipient: nothing was recorded.
  register_user("bob");
  auto ok1 = send(alice, by_peer("bob"), "c1");
  auto ok2 = send(alice, by_peer("bob"), "c2");
  ASSERT_TRUE(ok1 && ok2);
  EXPECT_FALSE(ok1->duplicate);
  EXPECT_FALSE(ok2->duplicate);
  EXPECT_EQ(ok1->seq, 1u);
  EXPECT_EQ(ok2->seq, 2u);
}

TEST_P(store_contract, retried_send_returns_the_first_result_and_appends_nothing) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto first = send(alice, by_peer("bob"), "same", "hello");
  auto retry = send(alice, by_peer("bob"), "same", "hello");
  ASSERT_TRUE(first && retry);
  EXPECT_FALSE(first->duplicate);
  ASSERT_TRUE(first->message);
  EXPECT_TRUE(retry->duplicate);
  EXPECT_EQ(retry->chat, first->chat);
  EXPECT_EQ(retry->seq, first->seq);
  EXPECT_EQ(retry->id, first->id);
  EXPECT_EQ(retry->sent_at_ms, first->sent_at_ms);
  EXPECT_FALSE(retry->message) << "a duplicate appends nothing, so has no entry to push";
  EXPECT_TRUE(retry->recipients.empty()) << "and no one to push it to";
  EXPECT_EQ(log_of(first->chat).size(), 1u);
  EXPECT_EQ(described(backlog_of(bob).behind),
            std::vector<std::string>{position(first->chat, 0, 1)});
  // The next new message takes the next seq: the retry used none.
  auto next = send(alice, by_peer("bob"), "other");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->seq, 2u);
}

TEST_P(store_contract, concurrent_retries_store_one_message) {
  auto alice = register_user("alice");
  register_user("bob");
  std::vector<std::thread> threads;
  std::atomic<int> fresh{0};
  std::set<message_id> ids;
  std::set<chat_id> chats;
  std::mutex m;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      auto r = send(alice, by_peer("bob"), "racing", "x");
      ASSERT_TRUE(r);
      if (!r->duplicate) ++fresh;
      std::lock_guard lock(m);
      ids.insert(r->id);
      chats.insert(r->chat);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(fresh.load(), 1);
  EXPECT_EQ(ids.size(), 1u);
  ASSERT_EQ(chats.size(), 1u);
  EXPECT_EQ(log_of(*chats.begin()).size(), 1u);
}

TEST_P(store_contract, sends_must_name_the_recipients_current_registration_id) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto plain = [&](std::uint32_t registration_id, const std::string& client_id) {
    return send(alice, by_peer("bob"), client_id, "ct", 2, registration_id);
  };
  auto before_keys = plain(0, "before-keys");  // no keys yet: nothing to be stale against
  ASSERT_TRUE(before_keys);
  ASSERT_TRUE(upload(keys_for(bob, "id-1", 7, true, 1, 1)));
  auto stale = plain(0, "c1");
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error(), errc::stale_keys);
  auto ok = plain(7, "c1");  // nothing was recorded for c1 by the refusal
  ASSERT_TRUE(ok);
  EXPECT_FALSE(ok->duplicate);
  EXPECT_EQ(ok->seq, 2u) << "the refusal appended nothing";
  ASSERT_TRUE(upload(keys_for(bob, "id-2", 9, true, 1, 1)));  // a reinstall
  auto old = plain(7, "c2");
  ASSERT_FALSE(old);
  EXPECT_EQ(old.error(), errc::stale_keys);
  reopen();  // the check does not depend on the writer's cache
  EXPECT_EQ(plain(7, "c3").error(), errc::stale_keys);
  EXPECT_TRUE(plain(9, "c3"));
  // The cipher type is kept with the message.
  auto log = log_of(before_keys->chat);
  ASSERT_EQ(seqs(log), (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(log.back()->cipher_type, 2u);
}

TEST_P(store_contract, a_refused_first_message_creates_no_chat) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  ASSERT_TRUE(upload(keys_for(bob, "id-1", 7, true, 1, 1)));
  ASSERT_EQ(send(alice, by_peer("bob"), "c1", "x", 2, 8).error(), errc::stale_keys);
  auto s = shared(alice, {"bob"});
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, std::vector<bool>{false});
  auto page = history(alice, by_peer("bob"));
  ASSERT_TRUE(page);
  EXPECT_EQ(page->chat, 0u);
  EXPECT_TRUE(page->messages.empty());
  EXPECT_TRUE(backlog_of(bob).behind.empty());
}

// Completions of writes run in commit order, on the store's threads, once each: for sends to
// one chat from one thread, commit order is the order of the calls, and so of the seqs.
TEST_P(store_contract, completions_run_in_commit_order) {
  auto alice = register_user("alice");
  register_user("bob");
  in_flight<send_outcome> sends;
  constexpr std::size_t n = 200;
  for (std::size_t i = 0; i < n; ++i)
    db_->send(request(alice, by_peer("bob"), "c" + std::to_string(i)), sends.slot());
  auto results = sends.all();
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(results[i]) << i;
    EXPECT_EQ(results[i]->seq, i + 1);
  }
  std::vector<std::size_t> in_call_order(n);
  for (std::size_t i = 0; i < n; ++i) in_call_order[i] = i;
  EXPECT_EQ(sends.completion_order(), in_call_order);
}

// --- shared chats --------------------------------------------------------------------------

TEST_P(store_contract, users_share_a_chat_from_its_first_message) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  register_user("carol");
  auto before = shared(alice, {"bob"});
  ASSERT_TRUE(before);
  EXPECT_EQ(*before, std::vector<bool>{false});
  ASSERT_TRUE(send(alice, by_peer("bob"), "c1"));
  auto a = shared(alice, {"bob", "carol", "ghost"});
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, (std::vector<bool>{true, false, false}));
  auto b = shared(bob, {"alice", "carol"});
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, (std::vector<bool>{true, false}));
}

// --- ack -------------------------------------------------------------------------------------

TEST_P(store_contract, ack_moves_the_cursor_and_sends_a_delivered_receipt) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  const chat_id ab = send_n(alice, by_peer("bob"), 3, "m");
  EXPECT_EQ(described(backlog_of(bob).behind), std::vector<std::string>{position(ab, 0, 3)});

  auto d = ack(bob, {{ab, 2}});
  ASSERT_TRUE(d);
  EXPECT_EQ(described(*d),
            std::vector<std::string>{receipt(alice.device, ab, "bob", delivered, 2)});
  EXPECT_EQ(described(backlog_of(bob).behind), std::vector<std::string>{position(ab, 2, 3)});

  // The same ack again, or a lower one: nothing moves, no receipt.
  auto again = ack(bob, {{ab, 2}});
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->empty());
  auto lower = ack(bob, {{ab, 1}});
  ASSERT_TRUE(lower);
  EXPECT_TRUE(lower->empty());
  EXPECT_EQ(described(backlog_of(bob).behind), std::vector<std::string>{position(ab, 2, 3)});

  // Up to the head: the chat is no longer behind.
  auto all = ack(bob, {{ab, 3}});
  ASSERT_TRUE(all);
  EXPECT_EQ(described(*all),
            std::vector<std::string>{receipt(alice.device, ab, "bob", delivered, 3)});
  EXPECT_TRUE(backlog_of(bob).behind.empty());
}

// A cluster node checks a chat's first push on a connection against the device's cursor.
TEST_P(store_contract, a_devices_cursor_is_read_as_committed) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  const chat_id ab = send_n(alice, by_peer("bob"), 3, "m");
  EXPECT_EQ(cursor(bob, ab), 0u);  // no ack yet
  ASSERT_TRUE(ack(bob, {{ab, 2}}));
  EXPECT_EQ(cursor(bob, ab), 2u);
  EXPECT_EQ(cursor(alice, ab), 0u);    // the sender's own messages move no cursor
  EXPECT_EQ(cursor(bob, ab + 1), 0u);  // no such chat
  reopen();
  EXPECT_EQ(cursor(bob, ab), 2u);
}

// A drain's move over the device's own entries: an ack without receipts, all or nothing.
TEST_P(store_contract, passing_own_entries_moves_cursors_like_an_ack_all_or_nothing) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  const chat_id ab = send_n(alice, by_peer("bob"), 3, "a");
  const chat_id ac = send_n(alice, by_peer("carol"), 2, "c");
  const chat_id bc = send_n(bob, by_peer("carol"), 1, "b");
  // A chat alice is not in, or a seq above a head: refused, and the valid one beside it too.
  EXPECT_EQ(pass_own(alice, {{ab, 3}, {bc, 1}}).error(), errc::not_found);
  EXPECT_EQ(pass_own(alice, {{ab, 3}, {ac, 3}}).error(), errc::invalid_argument);
  EXPECT_EQ(cursor(alice, ab), 0u);
  EXPECT_EQ(cursor(alice, ac), 0u);

  ASSERT_TRUE(pass_own(alice, {{ab, 3}, {ac, 2}}));
  EXPECT_EQ(cursor(alice, ab), 3u);
  EXPECT_EQ(cursor(alice, ac), 2u);
  EXPECT_TRUE(backlog_of(alice).behind.empty());
  ASSERT_TRUE(pass_own(alice, {{ab, 1}}));
  EXPECT_EQ(cursor(alice, ab), 3u) << "never back";
  // A chat named twice counts once, at its highest seq (as in an ack).
  ASSERT_TRUE(send(alice, by_id(ac), "c2"));
  ASSERT_TRUE(pass_own(alice, {{ac, 3}, {ac, 1}}));
  EXPECT_EQ(cursor(alice, ac), 3u);
  // The watermark it moved is the user's delivered one, as after an ack.
  EXPECT_EQ(described(backlog_of(bob).marks),
            std::vector<std::string>{mark(ab, "alice", delivered, 3)});
  reopen();
  EXPECT_EQ(cursor(alice, ab), 3u);
}

TEST_P(store_contract, an_ack_of_several_chats_moves_each_and_counts_a_chat_named_twice_once) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  const chat_id ab = send_n(alice, by_peer("bob"), 3, "a");
  const chat_id cb = send_n(carol, by_peer("bob"), 2, "c");
  auto d = ack(bob, {{ab, 1}, {cb, 2}, {ab, 3}});
  ASSERT_TRUE(d);
  EXPECT_EQ(described(*d), sorted({receipt(alice.device, ab, "bob", delivered, 3),
                                   receipt(carol.device, cb, "bob", delivered, 2)}));
  EXPECT_TRUE(backlog_of(bob).behind.empty());
}

TEST_P(store_contract, an_ack_with_one_bad_entry_moves_nothing) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  const chat_id ab = send_n(alice, by_peer("bob"), 3, "a");
  const chat_id cb = send_n(carol, by_peer("bob"), 2, "c");
  const chat_id ac = send_n(alice, by_peer("carol"), 1, "x");
  const auto untouched = sorted({position(ab, 0, 3), position(cb, 0, 2)});

  // The good entries come first, so that a store applying entry by entry would have moved them.
  auto above_head = ack(bob, {{ab, 2}, {cb, 3}});
  ASSERT_FALSE(above_head);
  EXPECT_EQ(above_head.error(), errc::invalid_argument);
  EXPECT_EQ(described(backlog_of(bob).behind), untouched);

  auto not_member = ack(bob, {{ab, 2}, {cb, 1}, {ac, 1}});
  ASSERT_FALSE(not_member);
  EXPECT_EQ(not_member.error(), errc::not_found);
  EXPECT_EQ(described(backlog_of(bob).behind), untouched);

  auto no_such_chat = ack(bob, {{ab, 2}, {std::max({ab, cb, ac}) + 1'000'003, 1}});
  ASSERT_FALSE(no_such_chat);
  EXPECT_EQ(no_such_chat.error(), errc::not_found);
  EXPECT_EQ(described(backlog_of(bob).behind), untouched);

  // Nobody was told of a watermark that did not move, and none moved.
  EXPECT_TRUE(backlog_of(alice).marks.empty());
  EXPECT_TRUE(backlog_of(carol).marks.empty());
  EXPECT_EQ(*status_of(alice, ab, 1), message_status::sent);

  // The good entries alone are accepted, and receipt as if the refused acks never happened.
  auto good = ack(bob, {{ab, 2}, {cb, 1}});
  ASSERT_TRUE(good);
  EXPECT_EQ(described(*good), sorted({receipt(alice.device, ab, "bob", delivered, 2),
                                      receipt(carol.device, cb, "bob", delivered, 1)}));
}

// --- read marks ----------------------------------------------------------------------------

TEST_P(store_contract, read_marks_move_up_only_and_tell_the_other_member) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  const chat_id ab = send_n(alice, by_peer("bob"), 3, "m");
  auto r = mark_read(bob, ab, 2);
  ASSERT_TRUE(r);
  EXPECT_EQ(described(*r), std::vector<std::string>{receipt(alice.device, ab, "bob", read, 2)});
  EXPECT_EQ(*status_of(alice, ab, 1), message_status::read);
  EXPECT_EQ(*status_of(alice, ab, 2), message_status::read);
  EXPECT_EQ(*status_of(alice, ab, 3), message_status::sent);

  // At or below the mark: nothing changes, nothing is sent.
  for (std::uint64_t up_to : {2u, 1u}) {
    auto older = mark_read(bob, ab, up_to);
    ASSERT_TRUE(older) << up_to;
    EXPECT_TRUE(older->empty()) << up_to;
  }
  EXPECT_EQ(*status_of(alice, ab, 2), message_status::read);
  EXPECT_EQ(described(backlog_of(alice).marks), std::vector<std::string>{mark(ab, "bob", read, 2)});

  auto to_head = mark_read(bob, ab, 3);
  ASSERT_TRUE(to_head);
  EXPECT_EQ(described(*to_head),
            std::vector<std::string>{receipt(alice.device, ab, "bob", read, 3)});
  EXPECT_EQ(*status_of(alice, ab, 3), message_status::read);
}

TEST_P(store_contract, read_marks_outside_the_chat_or_above_its_head_are_refused) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  const chat_id ab = send_n(alice, by_peer("bob"), 2, "m");
  auto outsider = mark_read(carol, ab, 1);
  ASSERT_FALSE(outsider);
  EXPECT_EQ(outsider.error(), errc::not_found);
  auto no_such_chat = mark_read(bob, ab + 1'000'003, 1);
  ASSERT_FALSE(no_such_chat);
  EXPECT_EQ(no_such_chat.error(), errc::not_found);
  auto above = mark_read(bob, ab, 3);
  ASSERT_FALSE(above);
  EXPECT_EQ(above.error(), errc::invalid_argument);
  EXPECT_EQ(*status_of(alice, ab, 1), message_status::sent) << "no mark moved";
  EXPECT_TRUE(backlog_of(alice).marks.empty());
}

// --- status --------------------------------------------------------------------------------

TEST_P(store_contract, status_follows_the_other_members_watermarks) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  const chat_id ab = send_n(alice, by_peer("bob"), 4, "m");
  for (std::uint64_t seq = 1; seq <= 4; ++seq)
    EXPECT_EQ(*status_of(alice, ab, seq), message_status::sent) << seq;
  ASSERT_TRUE(ack(bob, {{ab, 3}}));
  ASSERT_TRUE(mark_read(bob, ab, 1));
  EXPECT_EQ(*status_of(alice, ab, 1), message_status::read);
  EXPECT_EQ(*status_of(alice, ab, 2), message_status::delivered);
  EXPECT_EQ(*status_of(alice, ab, 3), message_status::delivered);
  EXPECT_EQ(*status_of(alice, ab, 4), message_status::sent);
}

TEST_P(store_contract, status_only_for_the_sender) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  const chat_id ab = send_n(alice, by_peer("bob"), 1, "a");
  ASSERT_TRUE(send(bob, by_id(ab), "b"));  // seq 2, bob's
  EXPECT_EQ(status_of(bob, ab, 1).error(), errc::not_found) << "bob did not send seq 1";
  EXPECT_EQ(status_of(alice, ab, 2).error(), errc::not_found) << "alice did not send seq 2";
  EXPECT_EQ(*status_of(bob, ab, 2), message_status::sent);
  EXPECT_EQ(status_of(carol, ab, 1).error(), errc::not_found) << "carol is not a member";
  EXPECT_EQ(status_of(alice, ab, 42).error(), errc::not_found) << "no such seq";
  EXPECT_EQ(status_of(alice, ab + 1'000'003, 1).error(), errc::not_found) << "no such chat";
}

// --- backlog -------------------------------------------------------------------------------

// own_only: a chat with another device's entry above the cursor is never marked, and a chat
// with only the device's own entries there is where the backend checks.
TEST_P(store_contract, backlog_marks_chats_with_only_the_devices_own_entries_above_the_cursor) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  register_user("carol");
  const chat_id ab = send_n(alice, by_peer("bob"), 2, "a");
  ASSERT_TRUE(send(bob, by_id(ab), "b"));
  const chat_id ac = send_n(alice, by_peer("carol"), 2, "c");
  const bool checks = GetParam().checks_own_only;
  auto own_only = [](const device_backlog& b) {
    std::vector<std::string> out;
    for (const auto& p : b.behind) {
      if (p.own_only) out.push_back(position(p.chat, p.cursor, p.head));
    }
    return sorted(out);
  };
  auto a = backlog_of(alice);
  EXPECT_EQ(described(a.behind), sorted({position(ab, 0, 3), position(ac, 0, 2)}));
  EXPECT_EQ(own_only(a),
            checks ? std::vector<std::string>{position(ac, 0, 2)} : std::vector<std::string>{});
  EXPECT_TRUE(own_only(backlog_of(bob)).empty()) << "alice's messages are above bob's cursor";

  // Acked past bob's message, then alice's own again: only hers above the cursor.
  ASSERT_TRUE(ack(alice, {{ab, 3}}));
  ASSERT_TRUE(send(alice, by_id(ab), "a2"));
  a = backlog_of(alice);
  EXPECT_EQ(own_only(a),
            checks ? sorted({position(ab, 3, 4), position(ac, 0, 2)}) : std::vector<std::string>{});
  // Bob's reply above it: the chat is his again.
  ASSERT_TRUE(send(bob, by_id(ab), "b2"));
  a = backlog_of(alice);
  EXPECT_EQ(described(a.behind), sorted({position(ab, 3, 5), position(ac, 0, 2)}));
  EXPECT_EQ(own_only(a),
            checks ? std::vector<std::string>{position(ac, 0, 2)} : std::vector<std::string>{});
  // Another device of alice's: its message is for this one (own means this device's).
  const person alices_other{alice.user, alice.device + 1000, "alice"};
  ASSERT_TRUE(send(alices_other, by_id(ac), "from the other device"));
  EXPECT_TRUE(own_only(backlog_of(alice)).empty());
}

// A send moves no cursor: the sender's device acks its chats like any other (the server skips
// a device's own messages when it drains), so a chat one only sent to is behind for it too.
TEST_P(store_contract, backlog_lists_the_chats_behind_and_the_other_members_watermarks) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto dave = register_user("dave");
  const chat_id ab = send_n(alice, by_peer("bob"), 3, "a");
  const chat_id cb = send_n(carol, by_peer("bob"), 2, "c");
  const chat_id ac = send_n(alice, by_peer("carol"), 1, "x");

  auto b = backlog_of(bob);
  EXPECT_EQ(described(b.behind), sorted({position(ab, 0, 3), position(cb, 0, 2)}));
  EXPECT_TRUE(b.marks.empty()) << "no member has delivered or read anything";
  auto nothing = backlog_of(dave);
  EXPECT_TRUE(nothing.behind.empty());
  EXPECT_TRUE(nothing.marks.empty());

  auto d = ack(bob, {{ab, 2}});
  ASSERT_TRUE(d);
  ASSERT_TRUE(mark_read(bob, ab, 1));
  b = backlog_of(bob);
  EXPECT_EQ(described(b.behind), sorted({position(ab, 2, 3), position(cb, 0, 2)}));
  EXPECT_TRUE(b.marks.empty()) << "a user's own watermarks are not listed for it";
  auto a = backlog_of(alice);
  EXPECT_EQ(described(a.behind), sorted({position(ab, 0, 3), position(ac, 0, 1)}));
  EXPECT_EQ(described(a.marks), sorted({mark(ab, "bob", delivered, 2), mark(ab, "bob", read, 1)}));
  EXPECT_TRUE(backlog_of(carol).marks.empty()) << "bob has nothing of carol's yet";

  ASSERT_TRUE(ack(bob, {{ab, 3}, {cb, 2}}));
  EXPECT_TRUE(backlog_of(bob).behind.empty());
  EXPECT_EQ(described(backlog_of(carol).marks),
            std::vector<std::string>{mark(cb, "bob", delivered, 2)});

  // Alice's own cursors are her business: her ack tells bob, and empties her backlog.
  auto mine = ack(alice, {{ab, 3}, {ac, 1}});
  ASSERT_TRUE(mine);
  EXPECT_EQ(described(*mine), sorted({receipt(bob.device, ab, "alice", delivered, 3),
                                      receipt(carol.device, ac, "alice", delivered, 1)}));
  EXPECT_TRUE(backlog_of(alice).behind.empty());
  EXPECT_EQ(described(backlog_of(bob).marks),
            std::vector<std::string>{mark(ab, "alice", delivered, 3)});

  // A new message puts the chat behind again, from the cursor.
  ASSERT_TRUE(send(alice, by_id(ab), "late"));
  EXPECT_EQ(described(backlog_of(bob).behind), std::vector<std::string>{position(ab, 3, 4)});
}

// A client presents the receipts stamp it kept (QueueEmpty's, or a later receipt's): the
// backlog must list the watermarks that moved after it, with their current values, and may
// list more (the contract allows a store to answer with everything); a stamp the store never
// gave out gets everything.
TEST_P(store_contract, backlog_after_a_receipts_stamp_lists_what_moved_since) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  const chat_id ab = send_n(alice, by_peer("bob"), 2, "a");
  const chat_id ac = send_n(alice, by_peer("carol"), 2, "c");
  ASSERT_TRUE(ack(bob, {{ab, 1}}));
  ASSERT_TRUE(ack(carol, {{ac, 2}}));
  const auto first = backlog_of(alice);
  EXPECT_EQ(described(first.marks),
            sorted({mark(ab, "bob", delivered, 1), mark(ac, "carol", delivered, 2)}));
  EXPECT_GT(first.stamp, 0u);

  // Moves after the stamp carry higher stamps, and the next backlog lists them.
  auto moved = ack(bob, {{ab, 2}});
  ASSERT_TRUE(moved);
  ASSERT_EQ(moved->size(), 1u);
  EXPECT_GT(moved->front().mark.stamp, first.stamp);
  auto read_one = mark_read(bob, ab, 1);
  ASSERT_TRUE(read_one);
  ASSERT_EQ(read_one->size(), 1u);
  EXPECT_GT(read_one->front().mark.stamp, moved->front().mark.stamp);

  const auto second = backlog_of(alice, first.stamp);
  const auto listed = described(second.marks);
  for (const auto& want : {mark(ab, "bob", delivered, 2), mark(ab, "bob", read, 1)}) {
    EXPECT_NE(std::find(listed.begin(), listed.end(), want), listed.end()) << want;
  }
  for (const auto& stale : {mark(ab, "bob", delivered, 1)}) {
    EXPECT_EQ(std::find(listed.begin(), listed.end(), stale), listed.end()) << stale;
  }
  EXPECT_GE(second.stamp, read_one->front().mark.stamp);

  // A stamp from elsewhere (above any this store made) is not trusted: everything.
  EXPECT_EQ(described(backlog_of(alice, second.stamp + 1'000'000).marks),
            sorted({mark(ab, "bob", delivered, 2), mark(ab, "bob", read, 1),
                    mark(ac, "carol", delivered, 2)}));
  // After a restart, an old stamp still gets at least what moved after it.
  ASSERT_TRUE(mark_read(carol, ac, 2));
  reopen();
  const auto after_restart = described(backlog_of(alice, second.stamp).marks);
  const auto want = mark(ac, "carol", read, 2);
  EXPECT_NE(std::find(after_restart.begin(), after_restart.end(), want), after_restart.end());
}

// --- read_log ------------------------------------------------------------------------------

TEST_P(store_contract, read_log_pages_oldest_first_within_bounds_limit_and_bytes) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  std::vector<send_outcome> sent;
  for (int i = 0; i < 5; ++i) {
    // Ten bytes each; alternate senders and cipher types.
    const auto& from = i % 2 ? bob : alice;
    auto m = send(from, by_peer(i % 2 ? "alice" : "bob"), "c" + std::to_string(i),
                  std::string(10, static_cast<char>('a' + i)), i % 2 ? 3 : 1);
    ASSERT_TRUE(m);
    sent.push_back(*m);
  }
  const chat_id ab = sent[0].chat;

  auto all = log_of(ab);
  ASSERT_EQ(seqs(all), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& e = *all[i];
    const auto& from = i % 2 ? bob : alice;
    EXPECT_EQ(e.chat, ab);
    EXPECT_EQ(e.id, sent[i].id);
    EXPECT_EQ(e.sender, from.user);
    EXPECT_EQ(e.sender_device, from.device);
    EXPECT_EQ(e.sender_name, from.name);
    EXPECT_EQ(e.sent_at_ms, sent[i].sent_at_ms);
    EXPECT_EQ(e.payload, std::string(10, static_cast<char>('a' + i)));
    EXPECT_EQ(e.cipher_type, i % 2 ? 3u : 1u);
  }

  EXPECT_EQ(seqs(log_of(ab, 1, 4)), (std::vector<std::uint64_t>{2, 3, 4}));
  EXPECT_EQ(seqs(log_of(ab, 0, 2)), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(seqs(log_of(ab, 3)), (std::vector<std::uint64_t>{4, 5}));
  EXPECT_TRUE(log_of(ab, 5).empty());
  EXPECT_TRUE(log_of(ab, 2, 2).empty());
  EXPECT_EQ(seqs(log_of(ab, 0, no_bound, 2)), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(seqs(log_of(ab, 2, no_bound, 2)), (std::vector<std::uint64_t>{3, 4}));
  // Payload bytes: whole entries up to the budget, and always at least one.
  EXPECT_EQ(seqs(log_of(ab, 0, no_bound, 100, 25)), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(seqs(log_of(ab, 0, no_bound, 100, 20)), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(seqs(log_of(ab, 0, no_bound, 100, 30)), (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(seqs(log_of(ab, 1, no_bound, 100, 5)), (std::vector<std::uint64_t>{2}));
  EXPECT_EQ(seqs(log_of(ab, 1, 3, 100, 1'000)), (std::vector<std::uint64_t>{2, 3}));
}

// --- history -------------------------------------------------------------------------------

TEST_P(store_contract, history_is_newest_first_and_pages_by_seq) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  register_user("dave");
  chat_id ab = 0;
  for (int i = 0; i < 7; ++i) {
    // Ten bytes each, alternating senders.
    auto m = i % 2 ? send(bob, by_peer("alice"), "b" + std::to_string(i),
                          std::string(10, static_cast<char>('0' + i)))
                   : send(alice, by_peer("bob"), "a" + std::to_string(i),
                          std::string(10, static_cast<char>('0' + i)));
    ASSERT_TRUE(m);
    ab = m->chat;
  }
  ASSERT_TRUE(send(alice, by_peer("carol"), "x", "other chat"));

  auto page1 = history(alice, by_peer("bob"), 0, 3);
  ASSERT_TRUE(page1);
  EXPECT_EQ(page1->chat, ab);
  ASSERT_EQ(seqs(*page1), (std::vector<std::uint64_t>{7, 6, 5}));
  EXPECT_EQ(page1->messages[0].payload, std::string(10, '6'));
  EXPECT_EQ(page1->messages[0].sender_name, "alice");
  EXPECT_EQ(page1->messages[1].sender_name, "bob");
  EXPECT_EQ(page1->messages[1].sender_device, bob.device);
  EXPECT_EQ(page1->messages[1].chat, ab);
  EXPECT_GT(page1->messages[1].id, 0u);

  // The next page, asked by the other member, by chat id.
  auto page2 = history(bob, by_id(ab), page1->messages.back().seq, 10);
  ASSERT_TRUE(page2);
  EXPECT_EQ(page2->chat, ab);
  EXPECT_EQ(seqs(*page2), (std::vector<std::uint64_t>{4, 3, 2, 1}));
  EXPECT_EQ(page2->messages.back().payload, std::string(10, '0'));
  auto past_start = history(bob, by_id(ab), 1, 10);
  ASSERT_TRUE(past_start);
  EXPECT_TRUE(past_start->messages.empty());

  // Payload bytes: whole messages up to the budget, and always at least one.
  EXPECT_EQ(seqs(*history(alice, by_id(ab), 0, 100, 25)), (std::vector<std::uint64_t>{7, 6}));
  EXPECT_EQ(seqs(*history(alice, by_id(ab), 0, 100, 30)), (std::vector<std::uint64_t>{7, 6, 5}));
  EXPECT_EQ(seqs(*history(alice, by_peer("bob"), 4, 100, 1)), (std::vector<std::uint64_t>{3}));

  // A peer with no chat yet: an empty page, chat 0.
  auto none = history(alice, by_peer("dave"));
  ASSERT_TRUE(none);
  EXPECT_EQ(none->chat, 0u);
  EXPECT_TRUE(none->messages.empty());

  auto outsider = history(carol, by_id(ab));
  ASSERT_FALSE(outsider);
  EXPECT_EQ(outsider.error(), errc::not_found);
}

// --- limits of the store -------------------------------------------------------------------

// A retry within the window is a duplicate; after it, the same client id sends a new message.
TEST_P(store_contract, dedupe_forgets_a_client_msg_id_after_its_window) {
  const auto window = 300ms;
  tuning_.dedupe_window = window;
  reopen();
  auto alice = register_user("alice");
  register_user("bob");

  const auto started = std::chrono::steady_clock::now();
  auto first = send(alice, by_peer("bob"), "c1", "one");
  auto retry = send(alice, by_peer("bob"), "c1", "one");
  const auto retried = std::chrono::steady_clock::now();
  ASSERT_TRUE(first && retry);
  EXPECT_FALSE(first->duplicate);
  if (retried - started < window) {
    EXPECT_TRUE(retry->duplicate);
    EXPECT_EQ(retry->id, first->id);
  } else {
    // A machine this slow cannot show the inside of the window; the outside is still tested.
    std::cerr << "dedupe test: the retry took longer than the window\n";
  }

  // Past the window, counted from the retry too (in case a duplicate renews the record).
  std::this_thread::sleep_until(retried + window + 100ms);
  auto late = send(alice, by_peer("bob"), "c1", "one again");
  ASSERT_TRUE(late);
  EXPECT_FALSE(late->duplicate);
  EXPECT_NE(late->id, first->id);
  EXPECT_EQ(late->chat, first->chat);
  const std::uint64_t head = retry->duplicate ? first->seq : retry->seq;
  EXPECT_EQ(late->seq, head + 1);
  ASSERT_TRUE(late->message);
  EXPECT_EQ(late->message->payload, "one again");
  EXPECT_EQ(log_of(first->chat).size(), head + 1);
}

// Writes beyond max_pending waiting for the writer are refused at once with busy, applying
// nothing; the ones that fit wait, and succeed once the writer moves on.
TEST_P(store_contract, writes_beyond_max_pending_are_refused_busy) {
  writer_gate gate;
  constexpr std::size_t max_pending = 4;
  tuning_.max_pending = max_pending;
  tuning_.after_commit = gate.hook();
  reopen();

  auto alice = register_user("alice");
  register_user("bob");
  gate.arm();
  in_flight<send_outcome> first;
  db_->send(request(alice, by_peer("bob"), "w0"), first.slot());
  ASSERT_TRUE(gate.wait_until_held()) << "the writer never committed";

  // The writer is stuck: max_pending requests may wait, the rest are refused.
  in_flight<send_outcome> sends;
  for (std::size_t i = 0; i < max_pending; ++i)
    db_->send(request(alice, by_peer("bob"), "q" + std::to_string(i)), sends.slot());
  constexpr std::size_t excess = 3;
  for (std::size_t i = 0; i < excess; ++i)
    db_->send(request(alice, by_peer("bob"), "x" + std::to_string(i)), sends.slot());
  in_flight<registration> late_registration;
  db_->register_account({"late", {}}, late_registration.slot());

  ASSERT_TRUE(sends.wait_until_completed(excess, 10s)) << "the excess was not refused at once";
  ASSERT_TRUE(late_registration.wait_until_completed(1, 10s));
  EXPECT_EQ(late_registration.all()[0].error(), errc::busy);
  {
    auto so_far = sends.so_far();
    for (std::size_t i = 0; i < max_pending + excess; ++i) {
      if (i < max_pending) {
        EXPECT_FALSE(so_far[i]) << "call " << i << " completed while the writer was stuck";
      } else {
        ASSERT_TRUE(so_far[i]) << i;
        ASSERT_FALSE(*so_far[i]) << i;
        EXPECT_EQ(so_far[i]->error(), errc::busy) << i;
      }
    }
  }
  EXPECT_EQ(db_->pending_writes(), max_pending);

  gate.open();
  auto w0 = first.all();
  ASSERT_TRUE(w0[0]);
  EXPECT_EQ(w0[0]->seq, 1u);
  auto results = sends.all();
  for (std::size_t i = 0; i < max_pending; ++i) {
    ASSERT_TRUE(results[i]) << i;
    EXPECT_EQ(results[i]->seq, i + 2);
  }
  const chat_id ab = w0[0]->chat;
  EXPECT_EQ(log_of(ab).size(), 1 + max_pending) << "the refused sends appended nothing";
  // Nothing was recorded for the refused requests: they go through as new ones now.
  auto x0 = send(alice, by_peer("bob"), "x0");
  ASSERT_TRUE(x0);
  EXPECT_FALSE(x0->duplicate);
  EXPECT_EQ(x0->seq, 2 + max_pending);
  auto acct = wait_for<account>([&](auto done) { db_->find_account("late", done); });
  EXPECT_EQ(acct.error(), errc::not_found);
  EXPECT_EQ(db_->pending_writes(), 0u);
}

// --- durability and shutdown ---------------------------------------------------------------

TEST_P(store_contract, everything_survives_a_stop_and_reopen) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  const chat_id ab = send_n(alice, by_peer("bob"), 3, "m");
  auto first = send(alice, by_id(ab), "kept", "durable");  // seq 4
  ASSERT_TRUE(first);
  ASSERT_TRUE(ack(bob, {{ab, 3}}));
  ASSERT_TRUE(mark_read(bob, ab, 2));
  db_->stop();
  reopen();

  auto log = log_of(ab);
  ASSERT_EQ(seqs(log), (std::vector<std::uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(log.back()->payload, "durable");
  EXPECT_EQ(log.back()->id, first->id);
  EXPECT_EQ(described(backlog_of(bob).behind), std::vector<std::string>{position(ab, 3, 4)});
  EXPECT_EQ(described(backlog_of(alice).marks),
            sorted({mark(ab, "bob", delivered, 3), mark(ab, "bob", read, 2)}));
  EXPECT_EQ(*status_of(alice, ab, 2), message_status::read);
  EXPECT_EQ(*status_of(alice, ab, 3), message_status::delivered);
  // Cursors and marks still move up only, from their stored values.
  auto same = ack(bob, {{ab, 3}});
  ASSERT_TRUE(same);
  EXPECT_TRUE(same->empty());
  auto lower = ack(bob, {{ab, 1}});
  ASSERT_TRUE(lower);
  EXPECT_TRUE(lower->empty());
  auto lower_read = mark_read(bob, ab, 1);
  ASSERT_TRUE(lower_read);
  EXPECT_TRUE(lower_read->empty());

  auto retry = send(alice, by_id(ab), "kept", "durable");
  ASSERT_TRUE(retry);
  EXPECT_TRUE(retry->duplicate) << "dedupe records survive";
  EXPECT_EQ(retry->seq, 4u);
  EXPECT_EQ(retry->id, first->id);
  auto next = send(bob, by_peer("alice"), "after restart");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->chat, ab);
  EXPECT_EQ(next->seq, 5u) << "the head continues";
  EXPECT_GT(next->id, first->id);
  EXPECT_EQ(*wait_for<std::vector<bool>>(
                [&](auto done) { db_->shared_chats(alice.user, {"bob"}, done); }),
            std::vector<bool>{true});
  auto carol = register_user("carol");  // counters continue: no id reuse
  EXPECT_GT(carol.user, bob.user);
  EXPECT_GT(carol.device, bob.device);
  auto other = send(carol, by_peer("alice"), "c");
  ASSERT_TRUE(other);
  EXPECT_NE(other->chat, ab);
}

TEST_P(store_contract, stopped_store_refuses_work) {
  auto alice = register_user("alice");
  register_user("bob");
  db_->stop();
  db_->stop();  // idempotent
  auto r = wait_for<registration>([&](auto done) { db_->register_account({"late", {}}, done); });
  EXPECT_EQ(r.error(), errc::shutting_down);
  EXPECT_EQ(send(alice, by_peer("bob"), "c1").error(), errc::shutting_down);
  auto d = wait_for<device>([&](auto done) { db_->find_device(alice.device, done); });
  EXPECT_EQ(d.error(), errc::shutting_down);
}

// --- groups ------------------------------------------------------------------------------------

class store_groups : public store_contract {
 protected:
  // `request_id`: the idempotency key; empty: a new one per call.
  result<group_outcome> create(const person& creator, std::vector<std::string> members,
                               std::size_t max_members = 1024, const std::string& name = "g",
                               std::string request_id = {}) {
    if (request_id.empty()) request_id = "create-" + std::to_string(++creates_);
    create_group_request r{creator.user, creator.device,     creator.name,         name,
                           std::move(members), max_members, std::move(request_id)};
    return wait_for<group_outcome>([&](auto done) { db_->create_group(r, done); });
  }
  int creates_ = 0;
  result<group_outcome> change(const person& actor, chat_id chat, group_change what,
                               const std::string& user = {}, const std::string& name = {},
                               std::size_t max_members = 1024) {
    group_change_request r{actor.user, actor.device, actor.name, chat, what, user, name,
                           max_members};
    return wait_for<group_outcome>([&](auto done) { db_->change_group(r, done); });
  }
  result<group_info> info(const person& p, chat_id chat) {
    return wait_for<group_info>([&](auto done) { db_->get_group(p.user, chat, done); });
  }
  result<send_outcome> say(const person& from, chat_id chat, const std::string& id) {
    return send(from, by_id(chat), id, "sk-" + id, 4);
  }
  std::vector<receipt_delivery> merged(chat_id chat) {
    auto r = wait_for<std::vector<receipt_delivery>>(
        [&](auto done) { db_->group_receipts(chat, done); });
    EXPECT_TRUE(r);
    return r ? *r : std::vector<receipt_delivery>{};
  }
  static std::vector<std::string> names(const group_info& g) {
    std::vector<std::string> out;
    for (const auto& m : g.members) out.push_back(m.username + (m.admin ? "*" : ""));
    return out;
  }
  static std::vector<device_id> sorted_devices(std::vector<device_id> v) {
    std::sort(v.begin(), v.end());
    return v;
  }
};

// A group's cursors are written at the end of their write group (RocksDB): read once the
// ack is answered, they are there.
TEST_P(store_groups, a_members_cursor_is_read_once_its_ack_is_answered) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto g = create(alice, {"bob"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  ASSERT_TRUE(say(alice, chat, "one"));
  ASSERT_TRUE(say(alice, chat, "two"));
  ASSERT_TRUE(ack(bob, {{chat, 3}}));
  auto r = wait_for<std::uint64_t>(
      [&](auto done) { db_->device_cursor(bob.device, bob.user, chat, done); });
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 3u);
}

TEST_P(store_groups, creation_appends_one_event_and_pushes_it_to_every_other_member) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto g = create(alice, {"bob", "carol", "bob", "alice"});  // repeats count once
  ASSERT_TRUE(g);
  EXPECT_EQ(names(g->info), (std::vector<std::string>{"alice*", "bob", "carol"}));
  ASSERT_EQ(g->pushes.size(), 1u);
  const auto& e = *g->pushes[0].message;
  EXPECT_EQ(e.seq, 1u);
  ASSERT_TRUE(e.event);
  EXPECT_EQ(e.event->change, group_change::create);
  EXPECT_EQ(e.event->members, (std::vector<std::string>{"alice", "bob", "carol"}));
  EXPECT_EQ(e.sender_name, "alice");
  EXPECT_EQ(sorted_devices(g->pushes[0].recipients),
            sorted_devices({bob.device, carol.device}));
  // Stored as it was pushed: the log holds the event, with its fields.
  auto log = log_of(g->info.chat);
  ASSERT_EQ(log.size(), 1u);
  ASSERT_TRUE(log[0]->event);
  EXPECT_EQ(log[0]->event->members, e.event->members);
  // Everyone but the creator has it to fetch; the creator's device sent it.
  EXPECT_EQ(described(backlog_of(bob).behind),
            std::vector<std::string>{position(g->info.chat, 0, 1)});
  EXPECT_EQ(create(alice, {"nobody"}).error(), errc::unknown_user);
}

// A CreateGroup whose answer was lost is retried with the same id: the group the first made,
// as it is now, and nothing appended or pushed again; also after a reopen. The id is in the
// device's dedupe namespace: one that named a message is refused, another device's is its own.
TEST_P(store_groups, a_retried_creation_answers_with_the_first_group_and_creates_nothing) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto first = create(alice, {"bob"}, 1024, "g", "req-1");
  ASSERT_TRUE(first);
  EXPECT_FALSE(first->duplicate);
  const chat_id chat = first->info.chat;
  ASSERT_TRUE(change(alice, chat, group_change::add, "carol"));

  auto again = create(alice, {"bob"}, 1024, "g", "req-1");
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->info.chat, chat);
  EXPECT_EQ(again->created_seq, 1u);
  EXPECT_TRUE(again->pushes.empty());
  EXPECT_EQ(names(again->info), (std::vector<std::string>{"alice*", "bob", "carol"}));  // now
  EXPECT_EQ(log_of(chat).size(), 2u);  // CREATE and ADD, nothing more

  reopen();
  auto after = create(alice, {"bob"}, 1024, "g", "req-1");
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->duplicate);
  EXPECT_EQ(after->info.chat, chat);

  // Another device's same id is another request; an id a message used is refused.
  auto bobs = create(bob, {"alice"}, 1024, "g", "req-1");
  ASSERT_TRUE(bobs);
  EXPECT_FALSE(bobs->duplicate);
  EXPECT_NE(bobs->info.chat, chat);
  ASSERT_TRUE(send(alice, by_peer("carol"), "msg-1"));
  EXPECT_EQ(create(alice, {"bob"}, 1024, "g", "msg-1").error(), errc::invalid_argument);
  // And a send with the id of a group's creation is refused, not answered as a duplicate of
  // it (that would be a false ✓ for a message stored nowhere).
  const auto log_before = log_of(chat).size();
  EXPECT_EQ(send(alice, by_peer("carol"), "req-1").error(), errc::invalid_argument);
  EXPECT_EQ(send(alice, by_id(chat), "req-1", "x", 4).error(), errc::invalid_argument);
  EXPECT_EQ(log_of(chat).size(), log_before);

  // The creator left since: the retry finds nothing it may see.
  ASSERT_TRUE(change(alice, chat, group_change::leave));
  EXPECT_EQ(create(alice, {"bob"}, 1024, "g", "req-1").error(), errc::not_found);
}

TEST_P(store_groups, only_members_send_read_and_see_the_group) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto dave = register_user("dave");
  auto g = create(alice, {"bob"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  auto m = say(bob, chat, "b1");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->seq, 2u);
  EXPECT_EQ(m->recipients, std::vector<device_id>{alice.device});
  EXPECT_EQ(say(dave, chat, "d1").error(), errc::not_found);
  EXPECT_EQ(history(dave, by_id(chat)).error(), errc::not_found);
  EXPECT_EQ(info(dave, chat).error(), errc::not_found);
  EXPECT_EQ(change(dave, chat, group_change::leave).error(), errc::not_found);
  EXPECT_EQ(ack(dave, {{chat, 1}}).error(), errc::not_found);
  // A group takes sender-key messages only.
  EXPECT_EQ(send(bob, by_id(chat), "b2", "x", 2).error(), errc::invalid_argument);
  ASSERT_TRUE(info(bob, chat));
  EXPECT_EQ(history(bob, by_id(chat))->messages.size(), 2u);
}

TEST_P(store_groups, admin_rules_hold_and_a_refused_change_applies_nothing) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  register_user("dave");
  auto g = create(alice, {"bob", "carol"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  EXPECT_EQ(change(bob, chat, group_change::add, "dave").error(), errc::not_admin);
  EXPECT_EQ(change(bob, chat, group_change::remove, "carol").error(), errc::not_admin);
  EXPECT_EQ(change(bob, chat, group_change::promote, "bob").error(), errc::not_admin);
  EXPECT_EQ(change(bob, chat, group_change::rename, {}, "x").error(), errc::not_admin);
  EXPECT_EQ(change(alice, chat, group_change::add, "bob").error(), errc::already_member);
  EXPECT_EQ(change(alice, chat, group_change::remove, "dave").error(), errc::not_member);
  EXPECT_EQ(change(alice, chat, group_change::add, "nobody").error(), errc::unknown_user);
  EXPECT_EQ(change(alice, chat, group_change::remove, "alice").error(), errc::invalid_argument);
  EXPECT_EQ(change(alice, chat, group_change::demote, "alice").error(), errc::invalid_argument)
      << "the last admin cannot step down while members remain";
  EXPECT_EQ(log_of(chat).size(), 1u) << "refusals append nothing";

  auto promoted = change(alice, chat, group_change::promote, "bob");
  ASSERT_TRUE(promoted);
  EXPECT_EQ(names(promoted->info), (std::vector<std::string>{"alice*", "bob*", "carol"}));
  EXPECT_EQ(change(alice, chat, group_change::promote, "bob")->pushes.size(), 0u)
      << "promoting an admin changes nothing";
  auto renamed = change(bob, chat, group_change::rename, {}, "new name");
  ASSERT_TRUE(renamed);
  EXPECT_EQ(renamed->info.name, "new name");
  EXPECT_EQ(change(bob, chat, group_change::rename, {}, "new name")->pushes.size(), 0u)
      << "the same name changes nothing";
  auto demoted = change(bob, chat, group_change::demote, "alice");
  ASSERT_TRUE(demoted);
  EXPECT_EQ(names(demoted->info), (std::vector<std::string>{"alice", "bob*", "carol"}));
  auto log = log_of(chat);
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log[1]->event->change, group_change::promote);
  EXPECT_EQ(log[2]->event->change, group_change::rename);
  EXPECT_EQ(log[2]->event->name, "new name");
  EXPECT_EQ(log[3]->event->change, group_change::demote);
  EXPECT_EQ(log[3]->event->user, "alice");
  EXPECT_EQ(names(*info(carol, chat)), names(demoted->info));
}

TEST_P(store_groups, the_member_limit_holds_and_a_full_group_refuses_the_next_add) {
  auto alice = register_user("alice");
  for (const char* n : {"bob", "carol", "dave", "erin"}) register_user(n);
  EXPECT_EQ(create(alice, {"bob", "carol", "dave", "erin"}, 4).error(), errc::group_full);
  auto g = create(alice, {"bob", "carol", "dave"}, 4);
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  EXPECT_EQ(change(alice, chat, group_change::add, "erin", {}, 4).error(), errc::group_full);
  EXPECT_EQ(info(alice, chat)->members.size(), 4u);
  EXPECT_EQ(log_of(chat).size(), 1u);
  EXPECT_EQ(backlog_of(register_user("frank")).behind.size(), 0u);
  ASSERT_TRUE(change(alice, chat, group_change::remove, "dave", {}, 4));
  EXPECT_TRUE(change(alice, chat, group_change::add, "erin", {}, 4)) << "room again";
}

TEST_P(store_groups, the_last_admin_leaving_promotes_the_oldest_member) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto g = create(alice, {"bob", "carol"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  auto left = change(alice, chat, group_change::leave);
  ASSERT_TRUE(left);
  EXPECT_EQ(names(left->info), (std::vector<std::string>{"bob*", "carol"}));
  ASSERT_EQ(left->pushes.size(), 2u);
  EXPECT_EQ(left->pushes[0].message->event->change, group_change::leave);
  EXPECT_EQ(left->pushes[0].message->event->user, "alice");
  EXPECT_EQ(sorted_devices(left->pushes[0].recipients),
            sorted_devices({bob.device, carol.device}))
      << "the leaver's own device sent it";
  EXPECT_EQ(left->pushes[1].message->event->change, group_change::promote);
  EXPECT_EQ(left->pushes[1].message->event->user, "bob");
  EXPECT_EQ(left->pushes[1].message->sender, 0u) << "by the server";
  EXPECT_EQ(sorted_devices(left->pushes[1].recipients),
            sorted_devices({bob.device, carol.device}));
  EXPECT_EQ(info(alice, chat).error(), errc::not_found);
  // A group of one: the last member leaves and the group is empty.
  auto solo = create(carol, {});
  ASSERT_TRUE(solo);
  auto own = say(carol, solo->info.chat, "alone");
  ASSERT_TRUE(own);
  EXPECT_TRUE(own->recipients.empty());
  auto alone = report_of(carol, solo->info.chat, own->seq);
  ASSERT_TRUE(alone);
  EXPECT_EQ(alone->recipients, 0u);
  EXPECT_EQ(alone->status, message_status::sent) << "nobody else has it";
  auto gone = change(carol, solo->info.chat, group_change::leave);
  ASSERT_TRUE(gone);
  EXPECT_TRUE(gone->info.members.empty());
  EXPECT_EQ(gone->pushes.size(), 1u);
}

TEST_P(store_groups, a_removed_member_gets_its_removal_and_nothing_after_it) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto g = create(alice, {"bob", "carol"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  ASSERT_TRUE(say(alice, chat, "a1"));  // 2
  auto removed = change(alice, chat, group_change::remove, "bob");  // 3
  ASSERT_TRUE(removed);
  EXPECT_EQ(sorted_devices(removed->pushes[0].recipients),
            sorted_devices({bob.device, carol.device}))
      << "the removed member is told";
  auto after = say(alice, chat, "a2");  // 4
  ASSERT_TRUE(after);
  EXPECT_EQ(after->recipients, std::vector<device_id>{carol.device});
  EXPECT_EQ(described(backlog_of(bob).behind),
            std::vector<std::string>{position(chat, 0, 3)})
      << "its drain stops at the removal";
  EXPECT_EQ(pass_own(bob, {{chat, 4}}).error(), errc::not_found) << "nor past its removal";
  ASSERT_TRUE(pass_own(bob, {{chat, 2}})) << "a former member's cursor moves up to it";
  auto removal_acked = ack_moves(bob, {{chat, 3}});
  ASSERT_TRUE(removal_acked) << "it may ack what it was sent";
  EXPECT_TRUE(removal_acked->groups.empty()) << "a former member's ack moves no merged mark";
  EXPECT_EQ(ack(bob, {{chat, 4}}).error(), errc::not_found);
  EXPECT_TRUE(backlog_of(bob).behind.empty());
  EXPECT_TRUE(backlog_of(bob, backlog_of(bob).stamp).behind.empty());
  EXPECT_EQ(history(bob, by_id(chat)).error(), errc::not_found);
  EXPECT_EQ(say(bob, chat, "b1").error(), errc::not_found);
  // Added again: from the add on, nothing of what was sent while it was out.
  auto back = change(alice, chat, group_change::add, "bob");  // 5
  ASSERT_TRUE(back);
  EXPECT_EQ(described(backlog_of(bob).behind), std::vector<std::string>{position(chat, 4, 5)});
}

TEST_P(store_groups, a_late_joiner_starts_at_its_add_and_is_not_counted_for_older_messages) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto g = create(alice, {"bob"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  auto old = say(alice, chat, "a1");  // 2
  ASSERT_TRUE(old);
  auto added = change(alice, chat, group_change::add, "carol");  // 3
  ASSERT_TRUE(added);
  EXPECT_EQ(added->info.members.back().joined_seq, 3u);
  EXPECT_EQ(described(backlog_of(carol).behind), std::vector<std::string>{position(chat, 2, 3)});
  auto r = report_of(alice, chat, old->seq);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->recipients, 1u) << "carol was not a member when it was sent";
  auto fresh = say(alice, chat, "a2");  // 4
  ASSERT_TRUE(fresh);
  EXPECT_EQ(report_of(alice, chat, fresh->seq)->recipients, 2u);
  // Its history starts at its add too: nothing from before it joined.
  auto page = history(carol, by_id(chat));
  ASSERT_TRUE(page);
  EXPECT_EQ(seqs(*page), (std::vector<std::uint64_t>{4, 3}));
  EXPECT_TRUE(history(carol, by_id(chat), 3)->messages.empty());
  EXPECT_EQ(seqs(*history(bob, by_id(chat))), (std::vector<std::uint64_t>{4, 3, 2, 1}));
}

TEST_P(store_groups, status_counts_and_names_who_has_a_message_and_who_read_it) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto dave = register_user("dave");
  auto g = create(alice, {"bob", "carol", "dave"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  auto m = say(alice, chat, "a1");  // 2
  ASSERT_TRUE(m);
  auto r = report_of(alice, chat, 2, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, message_status::sent);
  EXPECT_EQ(r->recipients, 3u);
  EXPECT_EQ(r->delivered, 0u);
  ASSERT_TRUE(ack(bob, {{chat, 2}}));
  ASSERT_TRUE(ack(carol, {{chat, 2}}));
  ASSERT_TRUE(read_moves(carol, chat, 2));
  r = report_of(alice, chat, 2, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, message_status::sent);
  EXPECT_EQ(r->delivered, 2u);
  EXPECT_EQ(r->read, 1u);
  EXPECT_EQ(sorted(r->delivered_to), (std::vector<std::string>{"bob", "carol"}));
  EXPECT_EQ(r->read_by, std::vector<std::string>{"carol"});
  EXPECT_TRUE(report_of(alice, chat, 2, false)->delivered_to.empty()) << "names on request";
  ASSERT_TRUE(ack(dave, {{chat, 2}}));
  EXPECT_EQ(status_of(alice, chat, 2).value(), message_status::delivered);
  EXPECT_EQ(report_of(bob, chat, 2).error(), errc::not_found) << "only its sender asks";
  EXPECT_EQ(report_of(alice, chat, 1).error(), errc::not_found) << "events have no status";
}

TEST_P(store_groups, receipts_are_merged_per_group_as_the_lowest_of_the_other_members) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto g = create(alice, {"bob", "carol"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  ASSERT_TRUE(say(alice, chat, "a1"));  // 2
  ASSERT_TRUE(say(alice, chat, "a2"));  // 3
  auto moved = ack_moves(bob, {{chat, 3}});
  ASSERT_TRUE(moved);
  EXPECT_TRUE(moved->receipts.empty()) << "no receipt per member per ack";
  EXPECT_EQ(moved->groups, std::vector<chat_id>{chat});
  // Carol has nothing: alice and bob see 0 (nothing pushed); carol sees min(alice 0, bob 3).
  auto first = merged(chat);
  EXPECT_EQ(described(first), std::vector<std::string>{}) << "nobody's view moved above 0";
  ASSERT_TRUE(ack(carol, {{chat, 2}}));
  ASSERT_TRUE(ack(alice, {{chat, 3}}));
  auto second = merged(chat);
  // alice: min(bob 3, carol 2) = 2; bob: min(alice 3, carol 2) = 2; carol: min(3, 3) = 3.
  EXPECT_EQ(described(second),
            (std::vector<std::string>{receipt(alice.device, chat, "", message_status::delivered, 2),
                                      receipt(bob.device, chat, "", message_status::delivered, 2),
                                      receipt(carol.device, chat, "", message_status::delivered,
                                              3)}));
  for (const auto& d : second) EXPECT_GT(d.mark.stamp, 0u);
  EXPECT_TRUE(merged(chat).empty()) << "unchanged: nothing again";
  // A login sees the same merged marks.
  EXPECT_EQ(described(backlog_of(alice).marks),
            std::vector<std::string>{mark(chat, "", message_status::delivered, 2)});
  auto since = backlog_of(alice).stamp;
  ASSERT_TRUE(ack(carol, {{chat, 3}}));
  ASSERT_TRUE(read_moves(bob, chat, 3));
  ASSERT_TRUE(read_moves(carol, chat, 3));
  auto third = merged(chat);
  EXPECT_EQ(described(backlog_of(alice, since).marks),
            (std::vector<std::string>{mark(chat, "", message_status::delivered, 3),
                                      mark(chat, "", message_status::read, 3)}))
      << "a login with a stamp gets the groups whose merged marks moved after it";
}

// A removed member's ack of its removal and its re-add in one group commit: the re-add's
// cursor (just before the new ADD) is what is stored, not the ack's older one, which a
// write made later in the same batch would otherwise restore (then its next login would be
// drained what was sent while it was out). The writer is held after a commit while the two
// requests queue, so that they share the next one.
TEST_P(store_groups, a_re_add_in_the_same_commit_as_the_removal_ack_keeps_the_new_cursor) {
  writer_gate gate;
  tuning_.after_commit = gate.hook();
  reopen();

  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto g = create(alice, {"bob"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  ASSERT_TRUE(say(alice, chat, "a1"));                                  // 2
  ASSERT_TRUE(change(alice, chat, group_change::remove, "bob"));        // 3: bob's last
  ASSERT_TRUE(say(alice, chat, "a2"));                                  // 4: not bob's
  gate.arm();
  in_flight<send_outcome> first;
  db_->send(request(alice, by_id(chat), "a3", "sk", 4), first.slot());  // 5, then held
  ASSERT_TRUE(gate.wait_until_held());
  in_flight<watermark_moves> acked;
  db_->ack(bob.device, bob.user, {{chat, 3}}, acked.slot());
  in_flight<group_outcome> added;
  group_change_request add{alice.user, alice.device, alice.name, chat, group_change::add,
                           "bob", {}, 1024};
  db_->change_group(add, added.slot());
  gate.open();
  ASSERT_TRUE(first.all()[0]);
  ASSERT_TRUE(acked.all()[0]);
  auto re_added = added.all()[0];
  ASSERT_TRUE(re_added);
  EXPECT_EQ(re_added->pushes.back().message->seq, 6u);
  EXPECT_EQ(described(backlog_of(bob).behind), std::vector<std::string>{position(chat, 5, 6)})
      << "only the new ADD, nothing of what was sent while bob was out";
}

TEST_P(store_groups, system_messages_and_messages_share_one_order) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  register_user("carol");
  auto g = create(alice, {"bob"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  ASSERT_TRUE(say(bob, chat, "b1"));
  ASSERT_TRUE(change(alice, chat, group_change::add, "carol"));
  ASSERT_TRUE(say(alice, chat, "a1"));
  ASSERT_TRUE(change(alice, chat, group_change::rename, {}, "renamed"));
  auto log = log_of(chat);
  ASSERT_EQ(seqs(log), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  std::vector<std::string> kinds;
  for (const auto& m : log) kinds.push_back(m->event ? "event" : m->payload);
  EXPECT_EQ(kinds, (std::vector<std::string>{"event", "sk-b1", "event", "sk-a1", "event"}));
  // The order survives a restart.
  reopen();
  auto again = log_of(chat);
  ASSERT_EQ(again.size(), 5u);
  EXPECT_EQ(again[2]->event->user, "carol");
  EXPECT_EQ(again[4]->event->name, "renamed");
  EXPECT_EQ(names(*info(alice, chat)), (std::vector<std::string>{"alice*", "bob", "carol"}));
}

INSTANTIATE_TEST_SUITE_P(backends, store_groups, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return std::string(info.param.name); });


// --- media ------------------------------------------------------------------------------------

class store_media : public store_groups {
 protected:
  static std::string media_id(int n) {
    std::string id = "0123456789abcdef0123456789abcdef";
    id[31] = "0123456789abcdef"[n % 16];
    id[30] = "0123456789abcdef"[(n / 16) % 16];
    return id;
  }
  result<std::uint64_t> create_media(const person& owner, const std::string& id,
                                     std::uint64_t size, std::uint64_t quota = 0) {
    return wait_for<std::uint64_t>(
        [&](auto done) { db_->create_media({owner.user, id, size, quota}, done); });
  }
  result<send_outcome> send_file(const person& from, chat_ref to, const std::string& client_id,
                                 const std::string& media, std::uint32_t cipher_type = 1) {
    auto r = request(from, std::move(to), client_id, "file", cipher_type);
    r.media = media;
    return wait_for<send_outcome>([&](auto done) { db_->send(r, done); });
  }
  result<media_record> media_of(const person& p, chat_id chat, std::uint64_t seq) {
    return wait_for<media_record>([&](auto done) { db_->media_of(p.user, chat, seq, done); });
  }
  std::vector<std::string> unreferenced(std::uint64_t before_ms) {
    auto r = wait_for<std::vector<media_record>>(
        [&](auto done) { db_->unreferenced_media(before_ms, 100, done); });
    EXPECT_TRUE(r);
    std::vector<std::string> out;
    if (r) {
      for (const auto& m : *r) out.push_back(m.media);
    }
    return out;
  }
  result<std::vector<std::string>> delete_media(std::vector<std::string> ids,
                                                std::uint64_t before_ms) {
    return wait_for<std::vector<std::string>>(
        [&](auto done) { db_->delete_media(std::move(ids), before_ms, done); });
  }
  static constexpr std::uint64_t far_future_ms = UINT64_MAX;
};

TEST_P(store_media, a_quota_counts_every_slot_until_its_record_is_deleted) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto first = create_media(alice, media_id(1), 600, 1000);
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, 600u);
  auto over = create_media(alice, media_id(2), 401, 1000);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error(), errc::quota_exceeded);
  auto exact = create_media(alice, media_id(3), 400, 1000);
  ASSERT_TRUE(exact) << "up to the quota exactly";
  EXPECT_EQ(*exact, 1000u);
  // Another account has its own.
  EXPECT_TRUE(create_media(bob, media_id(4), 1000, 1000));
  // The refused slot left nothing behind; the sweep frees the bytes of what it deletes.
  EXPECT_EQ(sorted(unreferenced(far_future_ms)),
            sorted({media_id(1), media_id(3), media_id(4)}));
  auto gone = delete_media({media_id(1)}, far_future_ms);
  ASSERT_TRUE(gone);
  EXPECT_EQ(*gone, std::vector<std::string>{media_id(1)});
  auto again = create_media(alice, media_id(5), 600, 1000);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 1000u);
}

TEST_P(store_media, an_owner_reads_its_own_record_and_nobody_elses) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  ASSERT_TRUE(create_media(alice, media_id(1), 12345));
  const auto own = [&](const person& p, const std::string& id) {
    return wait_for<media_record>([&](auto done) { db_->own_media(p.user, id, done); });
  };
  auto mine = own(alice, media_id(1));
  ASSERT_TRUE(mine);
  EXPECT_EQ(mine->media, media_id(1));
  EXPECT_EQ(mine->owner, alice.user);
  EXPECT_EQ(mine->size, 12345u);
  EXPECT_EQ(mine->references, 0u);
  auto theirs = own(bob, media_id(1));
  ASSERT_FALSE(theirs);
  EXPECT_EQ(theirs.error(), errc::media_not_found) << "another account's record";
  auto none = own(alice, media_id(2));
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), errc::media_not_found);
  // A reference shows once the file is sent.
  ASSERT_TRUE(send_file(alice, by_peer("bob"), "a1", media_id(1)));
  auto sent = own(alice, media_id(1));
  ASSERT_TRUE(sent);
  EXPECT_EQ(sent->references, 1u);
}

// A slot's first multipart upload stays bound: a second is answered with the first, for the
// caller to refuse; the binding survives a send, a reopen, and shows to the sweep.
TEST_P(store_media, a_slot_binds_its_first_upload_and_keeps_it) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  ASSERT_TRUE(create_media(alice, media_id(1), 100));
  const auto bind = [&](const person& p, const std::string& id, const std::string& upload) {
    return wait_for<std::string>([&](auto done) { db_->bind_upload(p.user, id, upload, done); });
  };
  const auto bound_in_record = [&] {
    auto r =
        wait_for<media_record>([&](auto done) { db_->own_media(alice.user, media_id(1), done); });
    EXPECT_TRUE(r);
    return r ? r->upload_id : std::string("(no record)");
  };
  EXPECT_EQ(bound_in_record(), "") << "a new slot has no upload";
  auto theirs = bind(bob, media_id(1), "u-bob");
  ASSERT_FALSE(theirs);
  EXPECT_EQ(theirs.error(), errc::media_not_found) << "another account's slot";
  auto none = bind(alice, media_id(2), "u-2");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), errc::media_not_found);
  EXPECT_EQ(bound_in_record(), "") << "refused binds wrote nothing";

  auto first = bind(alice, media_id(1), "u-first");
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, "u-first");
  auto second = bind(alice, media_id(1), "u-second");
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, "u-first") << "the first upload stays bound";
  EXPECT_EQ(bound_in_record(), "u-first");
  auto listed = wait_for<std::vector<media_record>>(
      [&](auto done) { db_->unreferenced_media(far_future_ms, 100, done); });
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().upload_id, "u-first") << "the sweep sees the upload to abort";

  ASSERT_TRUE(send_file(alice, by_peer("bob"), "a1", media_id(1)));
  reopen();
  EXPECT_EQ(bound_in_record(), "u-first") << "kept through a send and a reopen";
}

TEST_P(store_media, a_message_references_its_senders_blob_and_only_its_senders) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  ASSERT_TRUE(create_media(alice, media_id(1), 100));
  auto stolen = send_file(bob, by_peer("alice"), "b1", media_id(1));
  ASSERT_FALSE(stolen);
  EXPECT_EQ(stolen.error(), errc::media_not_found) << "another account's blob";
  auto unknown = send_file(alice, by_peer("bob"), "a0", media_id(9));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error(), errc::media_not_found);

  auto sent = send_file(alice, by_peer("bob"), "a1", media_id(1));
  ASSERT_TRUE(sent);
  EXPECT_EQ(sent->message->media, media_id(1));
  EXPECT_EQ(log_of(sent->chat).at(0)->media, media_id(1)) << "stored with the entry";
  EXPECT_EQ(log_of(sent->chat).size(), 1u) << "the refused sends appended nothing";
  // Referenced: no longer a sweep candidate, and a delete leaves it.
  EXPECT_TRUE(unreferenced(far_future_ms).empty());
  auto kept = delete_media({media_id(1)}, far_future_ms);
  ASSERT_TRUE(kept);
  EXPECT_TRUE(kept->empty());

  // Both members may fetch it; nobody else, and no other entry names it.
  for (const auto* p : {&alice, &bob}) {
    auto m = media_of(*p, sent->chat, sent->seq);
    ASSERT_TRUE(m) << p->name;
    EXPECT_EQ(m->media, media_id(1));
    EXPECT_EQ(m->size, 100u);
    EXPECT_EQ(m->owner, alice.user);
    EXPECT_EQ(m->references, 1u);
  }
  auto carol = register_user("carol");
  auto outsider = media_of(carol, sent->chat, sent->seq);
  ASSERT_FALSE(outsider);
  EXPECT_EQ(outsider.error(), errc::not_found);
  ASSERT_TRUE(send(bob, by_id(sent->chat), "b2"));
  auto text = media_of(alice, sent->chat, sent->seq + 1);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error(), errc::not_found) << "a message without media";
  auto beyond = media_of(alice, sent->chat, sent->seq + 5);
  ASSERT_FALSE(beyond);
  EXPECT_EQ(beyond.error(), errc::not_found);
  // The same blob may be forwarded in another chat by its owner: two references.
  auto again = send_file(alice, by_peer("carol"), "a2", media_id(1));
  ASSERT_TRUE(again);
  auto twice = media_of(carol, again->chat, again->seq);
  ASSERT_TRUE(twice);
  EXPECT_EQ(twice->references, 2u);
}

TEST_P(store_media, in_a_group_only_members_who_saw_the_message_may_fetch_its_file) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto carol = register_user("carol");
  auto g = create(alice, {"bob"});
  ASSERT_TRUE(g);
  const chat_id chat = g->info.chat;
  ASSERT_TRUE(create_media(alice, media_id(1), 100));
  auto sent = send_file(alice, by_id(chat), "a1", media_id(1), 4);
  ASSERT_TRUE(sent);
  EXPECT_TRUE(media_of(bob, chat, sent->seq));
  ASSERT_TRUE(change(alice, chat, group_change::add, "carol"));
  auto late = media_of(carol, chat, sent->seq);
  ASSERT_FALSE(late) << "carol joined after the message";
  EXPECT_EQ(late.error(), errc::not_found);
  ASSERT_TRUE(change(alice, chat, group_change::remove, "bob"));
  auto removed = media_of(bob, chat, sent->seq);
  ASSERT_FALSE(removed) << "a former member";
  EXPECT_EQ(removed.error(), errc::not_found);
}

TEST_P(store_media, the_sweep_takes_only_unreferenced_records_older_than_its_cutoff) {
  auto alice = register_user("alice");
  ASSERT_TRUE(create_media(alice, media_id(1), 10));
  auto old = unreferenced(far_future_ms);
  ASSERT_EQ(old, std::vector<std::string>{media_id(1)});
  EXPECT_TRUE(unreferenced(1).empty()) << "created after the cutoff";
  auto young = delete_media({media_id(1)}, 1);
  ASSERT_TRUE(young);
  EXPECT_TRUE(young->empty()) << "not older than the cutoff: kept";
  // A send that references it between the listing and the delete keeps it.
  auto bob = register_user("bob");
  ASSERT_TRUE(send_file(alice, by_peer("bob"), "a1", media_id(1)));
  auto raced = delete_media(old, far_future_ms);
  ASSERT_TRUE(raced);
  EXPECT_TRUE(raced->empty());
  auto exists = wait_for<std::vector<bool>>(
      [&](auto done) { db_->media_exists({media_id(1), media_id(2)}, done); });
  ASSERT_TRUE(exists);
  EXPECT_EQ(*exists, (std::vector<bool>{true, false}));
}

TEST_P(store_media, records_survive_a_reopen) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  ASSERT_TRUE(create_media(alice, media_id(1), 700, 1000));
  auto sent = send_file(alice, by_peer("bob"), "a1", media_id(1));
  ASSERT_TRUE(sent);
  reopen();
  auto m = media_of(bob, sent->chat, sent->seq);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->size, 700u);
  auto over = create_media(alice, media_id(2), 301, 1000);
  ASSERT_FALSE(over) << "the bytes held survive too";
  EXPECT_EQ(over.error(), errc::quota_exceeded);
}

INSTANTIATE_TEST_SUITE_P(backends, store_media, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return std::string(info.param.name); });

INSTANTIATE_TEST_SUITE_P(backends, store_contract, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace parley::store
