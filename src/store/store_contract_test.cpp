// The Store contract, run against every backend (today: RocksDB; the PostgreSQL-protocol
// backend joins this list when it lands).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include "store/rocksdb/rocksdb_store.hpp"
#include "temp_dir.hpp"

namespace parley::store {
namespace {

namespace fs = std::filesystem;

// Runs one store call and waits for its completion.
template <class T, class Call>
result<T> wait_for(Call call) {
  std::promise<result<T>> p;
  auto f = p.get_future();
  call([&p](result<T> r) { p.set_value(std::move(r)); });
  return f.get();
}

struct backend {
  const char* name;
  std::function<std::unique_ptr<store>(const fs::path& dir)> open;
};

void PrintTo(const backend& b, std::ostream* os) { *os << b.name; }

std::vector<backend> backends() {
  return {{"rocksdb", [](const fs::path& dir) {
             rocksdb_options o;
             o.path = dir;
             o.sync = true;
             return std::make_unique<rocksdb_store>(o);
           }}};
}

class store_contract : public ::testing::TestWithParam<backend> {
 protected:
  void SetUp() override { reopen(); }
  void TearDown() override { db_.reset(); }
  void reopen() {
    db_.reset();
    db_ = GetParam().open(dir_.path());
  }

  registration register_user(const std::string& name) {
    sha256_digest h{};
    h[0] = static_cast<std::uint8_t>(name.size());
    auto r = wait_for<registration>([&](auto done) { db_->register_account({name, h}, done); });
    EXPECT_TRUE(r) << name;
    return *r;
  }

  result<send_outcome> send(const registration& from, const std::string& from_name,
                            const std::string& to, const std::string& client_id,
                            const std::string& payload = "hi") {
    return wait_for<send_outcome>([&](auto done) {
      db_->send({from.user, from.device, from_name, to, client_id, payload}, done);
    });
  }

  std::vector<device_event> queue_of(device_id d, event_id after = 0, std::size_t limit = 1000) {
    auto r = wait_for<std::vector<device_event>>(
        [&](auto done) { db_->read_queue(d, after, limit, done); });
    EXPECT_TRUE(r);
    return r ? *r : std::vector<device_event>{};
  }

  result<std::vector<delivery>> ack(device_id d, const std::string& name,
                                    std::vector<event_id> events) {
    return wait_for<std::vector<delivery>>([&](auto done) { db_->ack(d, name, events, done); });
  }

  result<message_status> status_of(user_id u, message_id m) {
    return wait_for<message_status>([&](auto done) { db_->status(u, m, done); });
  }

  // Public keys need no meaning here: the store keeps bytes; the server checks shapes and
  // signatures before it calls the store.
  static key_upload keys_for(const registration& r, const std::string& identity,
                             std::uint32_t registration_id, bool with_signed_prekey,
                             std::uint32_t first_id, std::uint32_t count) {
    key_upload u{r.device, identity, registration_id, std::nullopt, {}};
    if (with_signed_prekey) u.signed_prekey = prekey{1, "spk-" + identity, "sig-" + identity};
    for (std::uint32_t i = 0; i < count; ++i)
      u.one_time_prekeys.push_back({first_id + i, "otk-" + std::to_string(first_id + i), {}});
    return u;
  }

  result<key_stock> upload(key_upload u, std::size_t max_held = 500) {
    return wait_for<key_stock>([&](auto done) { db_->upload_keys(u, max_held, done); });
  }

  result<std::vector<key_bundle>> take(const std::string& name) {
    return wait_for<std::vector<key_bundle>>([&](auto done) { db_->take_key_bundles(name, done); });
  }

  test_support::temp_dir dir_{"parley_store_test_"};
  std::unique_ptr<store> db_;
};

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

TEST_P(store_contract, sends_must_name_the_recipients_current_registration_id) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto plain = [&](std::uint32_t registration_id, const std::string& client_id) {
    return wait_for<send_outcome>([&](auto done) {
      db_->send({alice.user, alice.device, "alice", "bob", client_id, "ct", 2, registration_id},
                done);
    });
  };
  EXPECT_TRUE(plain(0, "before-keys"));  // no keys yet: nothing to be stale against
  ASSERT_TRUE(upload(keys_for(bob, "id-1", 7, true, 1, 1)));
  auto stale = plain(0, "c1");
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error(), errc::stale_keys);
  auto ok = plain(7, "c1");  // nothing was recorded for c1 by the refusal
  ASSERT_TRUE(ok);
  EXPECT_FALSE(ok->duplicate);
  ASSERT_TRUE(upload(keys_for(bob, "id-2", 9, true, 1, 1)));  // a reinstall
  auto old = plain(7, "c2");
  ASSERT_FALSE(old);
  EXPECT_EQ(old.error(), errc::stale_keys);
  reopen();  // the check does not depend on the writer's cache
  EXPECT_EQ(plain(7, "c3").error(), errc::stale_keys);
  EXPECT_TRUE(plain(9, "c3"));
  // The cipher type is kept with the message.
  auto q = queue_of(bob.device);
  ASSERT_FALSE(q.empty());
  EXPECT_EQ(std::get<message_event>(q.back()).cipher_type, 2u);
}

TEST_P(store_contract, register_then_find) {
  auto alice = register_user("alice");
  auto dev = wait_for<device>([&](auto done) { db_->find_device(alice.device, done); });
  ASSERT_TRUE(dev);
  EXPECT_EQ(dev->user, alice.user);
  EXPECT_EQ(dev->username, "alice");
  EXPECT_EQ(dev->token_hash[0], 5);
  auto acct = wait_for<account>([&](auto done) { db_->find_account("alice", done); });
  ASSERT_TRUE(acct);
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

TEST_P(store_contract, send_queues_for_the_recipient_with_increasing_seq) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto m1 = send(alice, "alice", "bob", "c1", "one");
  auto m2 = send(alice, "alice", "bob", "c2", "two");
  auto m3 = send(bob, "bob", "alice", "c1", "three");  // same client id, other device: distinct
  ASSERT_TRUE(m1 && m2 && m3);
  EXPECT_EQ(m1->seq, 1u);
  EXPECT_EQ(m2->seq, 2u);
  EXPECT_EQ(m3->seq, 3u);  // one chat, one sequence
  EXPECT_LT(m1->id, m2->id);
  ASSERT_EQ(m1->deliveries.size(), 1u);
  EXPECT_EQ(m1->deliveries[0].device, bob.device);

  auto q = queue_of(bob.device);
  ASSERT_EQ(q.size(), 2u);
  const auto& first = std::get<message_event>(q[0]);
  EXPECT_EQ(first.payload, "one");
  EXPECT_EQ(first.from, "alice");
  EXPECT_EQ(std::get<message_event>(q[1]).payload, "two");
  // Paging: after the first event, limit 1.
  auto page = queue_of(bob.device, first.event, 1);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(std::get<message_event>(page[0]).payload, "two");
}

TEST_P(store_contract, retried_send_returns_the_first_result) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto first = send(alice, "alice", "bob", "same", "hello");
  auto retry = send(alice, "alice", "bob", "same", "hello");
  ASSERT_TRUE(first && retry);
  EXPECT_FALSE(first->duplicate);
  EXPECT_TRUE(retry->duplicate);
  EXPECT_EQ(first->id, retry->id);
  EXPECT_EQ(first->seq, retry->seq);
  EXPECT_TRUE(retry->deliveries.empty());
  EXPECT_EQ(queue_of(bob.device).size(), 1u);
}

TEST_P(store_contract, concurrent_retries_store_one_message) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  std::vector<std::thread> threads;
  std::atomic<int> fresh{0};
  std::set<message_id> ids;
  std::mutex m;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      auto r = send(alice, "alice", "bob", "racing", "x");
      ASSERT_TRUE(r);
      if (!r->duplicate) ++fresh;
      std::lock_guard lock(m);
      ids.insert(r->id);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(fresh.load(), 1);
  EXPECT_EQ(ids.size(), 1u);
  EXPECT_EQ(queue_of(bob.device).size(), 1u);
}

TEST_P(store_contract, send_to_unknown_user_fails_and_stores_nothing) {
  auto alice = register_user("alice");
  auto r = send(alice, "alice", "nobody", "c1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::unknown_user);
  // The same client id works afterwards for a real recipient: nothing was recorded.
  register_user("bob");
  auto ok = send(alice, "alice", "bob", "c1");
  ASSERT_TRUE(ok);
  EXPECT_FALSE(ok->duplicate);
}

TEST_P(store_contract, ack_removes_and_sends_a_delivered_receipt) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto m = send(alice, "alice", "bob", "c1");
  ASSERT_TRUE(m);
  EXPECT_EQ(*status_of(alice.user, m->id), message_status::sent);

  auto d = ack(bob.device, "bob", {m->id});
  ASSERT_TRUE(d);
  ASSERT_EQ(d->size(), 1u);
  EXPECT_EQ((*d)[0].device, alice.device);
  const auto& receipt = std::get<receipt_event>((*d)[0].event);
  EXPECT_EQ(receipt.id, m->id);
  EXPECT_EQ(receipt.status, message_status::delivered);
  EXPECT_EQ(receipt.peer, "bob");

  EXPECT_TRUE(queue_of(bob.device).empty());
  EXPECT_EQ(*status_of(alice.user, m->id), message_status::delivered);
  // The receipt waits in alice's queue until she acks it.
  auto aq = queue_of(alice.device);
  ASSERT_EQ(aq.size(), 1u);
  EXPECT_EQ(std::get<receipt_event>(aq[0]).id, m->id);
  ASSERT_TRUE(ack(alice.device, "alice", {receipt.event}));
  EXPECT_TRUE(queue_of(alice.device).empty());

  // A repeated ack is harmless and sends no second receipt.
  auto again = ack(bob.device, "bob", {m->id, 12345});
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->empty());
}

TEST_P(store_contract, an_event_acked_twice_in_one_request_or_after_a_reopen_counts_once) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto m1 = send(alice, "alice", "bob", "c1");
  auto m2 = send(alice, "alice", "bob", "c2");
  ASSERT_TRUE(m1 && m2);

  // The same event twice in one request (one group): one receipt.
  auto d1 = ack(bob.device, "bob", {m1->id, m1->id});
  ASSERT_TRUE(d1);
  EXPECT_EQ(d1->size(), 1u);

  // After a reopen nothing is remembered in memory; the entries are found in the store.
  reopen();
  auto d2 = ack(bob.device, "bob", {m2->id, m1->id});
  ASSERT_TRUE(d2);
  ASSERT_EQ(d2->size(), 1u) << "m1 was delivered before";
  EXPECT_EQ(std::get<receipt_event>((*d2)[0].event).id, m2->id);
  EXPECT_EQ(*status_of(alice.user, m2->id), message_status::delivered);
  EXPECT_TRUE(queue_of(bob.device).empty());

  // Receipts queued before and after the reopen: acking them sends nothing further.
  auto aq = queue_of(alice.device);
  ASSERT_EQ(aq.size(), 2u);
  std::vector<event_id> receipts;
  for (const auto& e : aq) receipts.push_back(std::get<receipt_event>(e).event);
  auto d3 = ack(alice.device, "alice", receipts);
  ASSERT_TRUE(d3);
  EXPECT_TRUE(d3->empty());
  EXPECT_TRUE(queue_of(alice.device).empty());
}

TEST_P(store_contract, read_marks_everything_up_to_and_is_monotonic) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto m1 = send(alice, "alice", "bob", "c1");
  auto m2 = send(alice, "alice", "bob", "c2");
  auto m3 = send(alice, "alice", "bob", "c3");
  ASSERT_TRUE(m1 && m2 && m3);
  auto r = wait_for<std::vector<delivery>>(
      [&](auto done) { db_->mark_read(bob.user, "bob", "alice", m2->id, done); });
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(std::get<receipt_event>((*r)[0].event).status, message_status::read);
  EXPECT_EQ(*status_of(alice.user, m1->id), message_status::read);
  EXPECT_EQ(*status_of(alice.user, m2->id), message_status::read);
  EXPECT_EQ(*status_of(alice.user, m3->id), message_status::sent);
  // Marking an older message changes nothing and sends nothing.
  auto older = wait_for<std::vector<delivery>>(
      [&](auto done) { db_->mark_read(bob.user, "bob", "alice", m1->id, done); });
  ASSERT_TRUE(older);
  EXPECT_TRUE(older->empty());
  EXPECT_EQ(*status_of(alice.user, m2->id), message_status::read);
}

TEST_P(store_contract, read_of_a_message_of_another_chat_is_not_found) {
  auto alice = register_user("alice");
  register_user("bob");
  auto carol = register_user("carol");
  auto m = send(alice, "alice", "bob", "c1");
  ASSERT_TRUE(m);
  auto r = wait_for<std::vector<delivery>>(
      [&](auto done) { db_->mark_read(carol.user, "carol", "alice", m->id, done); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::not_found);
}

TEST_P(store_contract, status_only_for_the_sender) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto m = send(alice, "alice", "bob", "c1");
  ASSERT_TRUE(m);
  EXPECT_EQ(status_of(bob.user, m->id).error(), errc::not_found);
  EXPECT_EQ(status_of(alice.user, 42).error(), errc::not_found);
}

TEST_P(store_contract, history_is_newest_first_and_pages_by_message_id) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  register_user("carol");
  std::vector<message_id> ids;
  for (int i = 0; i < 7; ++i) {
    auto m = i % 2 ? send(bob, "bob", "alice", "b" + std::to_string(i), std::to_string(i))
                   : send(alice, "alice", "bob", "a" + std::to_string(i), std::to_string(i));
    ASSERT_TRUE(m);
    ids.push_back(m->id);
  }
  ASSERT_TRUE(send(alice, "alice", "carol", "x", "other chat"));
  auto page1 = wait_for<std::vector<history_entry>>(
      [&](auto done) { db_->history(alice.user, "bob", 0, 3, done); });
  ASSERT_TRUE(page1);
  ASSERT_EQ(page1->size(), 3u);
  EXPECT_EQ((*page1)[0].payload, "6");
  EXPECT_EQ((*page1)[2].payload, "4");
  EXPECT_EQ((*page1)[1].from, "bob");
  auto page2 = wait_for<std::vector<history_entry>>(
      [&](auto done) { db_->history(bob.user, "alice", page1->back().id, 10, done); });
  ASSERT_TRUE(page2);
  ASSERT_EQ(page2->size(), 4u);
  EXPECT_EQ((*page2)[0].payload, "3");
  EXPECT_EQ((*page2)[3].payload, "0");
  auto unknown = wait_for<std::vector<history_entry>>(
      [&](auto done) { db_->history(alice.user, "ghost", 0, 10, done); });
  EXPECT_EQ(unknown.error(), errc::unknown_user);
}

TEST_P(store_contract, everything_survives_a_reopen) {
  auto alice = register_user("alice");
  auto bob = register_user("bob");
  auto m = send(alice, "alice", "bob", "c1", "durable");
  ASSERT_TRUE(m);
  reopen();
  auto q = queue_of(bob.device);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(std::get<message_event>(q[0]).payload, "durable");
  auto retry = send(alice, "alice", "bob", "c1", "durable");
  ASSERT_TRUE(retry);
  EXPECT_TRUE(retry->duplicate);
  auto next = send(alice, "alice", "bob", "c2", "after restart");
  ASSERT_TRUE(next);
  EXPECT_GT(next->id, m->id);
  EXPECT_EQ(next->seq, 2u);
  auto carol = register_user("carol");  // counters continue: no id reuse
  EXPECT_GT(carol.user, bob.user);
  EXPECT_GT(carol.device, bob.device);
}

TEST_P(store_contract, stopped_store_refuses_work) {
  auto alice = register_user("alice");
  db_->stop();
  auto r = wait_for<registration>([&](auto done) { db_->register_account({"late", {}}, done); });
  EXPECT_EQ(r.error(), errc::shutting_down);
  auto d = wait_for<device>([&](auto done) { db_->find_device(alice.device, done); });
  EXPECT_EQ(d.error(), errc::shutting_down);
}

// The names the operator sees in `top -H` and parley-bench's CPU split reads; stop() joins them.
TEST(rocksdb_store, names_its_threads_and_joins_them_on_stop) {
  auto thread_names = [] {
    std::multiset<std::string> names;
    for (const auto& task : fs::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      if (std::getline(comm, name)) names.insert(name);
    }
    return names;
  };
  test_support::temp_dir dir("parley_store_threads_");
  {
    rocksdb_options o;
    o.path = dir.path();
    o.reader_threads = 2;
    rocksdb_store store(o);
    auto names = thread_names();
    EXPECT_EQ(names.count("store-writer"), 1u);
    EXPECT_EQ(names.count("store-reader-0"), 1u);
    EXPECT_EQ(names.count("store-reader-1"), 1u);
    store.stop();
    // join() returns when the kernel clears the thread's id, a moment before the task leaves
    // /proc/self/task: wait for that, with a deadline (a thread never joined stays listed).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    auto store_threads = [&] {
      names = thread_names();
      return names.count("store-writer") + names.count("store-reader-0") +
             names.count("store-reader-1");
    };
    while (store_threads() != 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(names.count("store-writer"), 0u);
    EXPECT_EQ(names.count("store-reader-0"), 0u);
    EXPECT_EQ(names.count("store-reader-1"), 0u);
  }
}

// The writer's caches are emptied when they pass max_cached; what they held comes back from the
// store, so sequence numbers, users and sends go on as if nothing happened.
TEST(rocksdb_store, caches_past_their_bound_refill_from_the_store) {
  test_support::temp_dir dir("parley_store_caches_");
  rocksdb_options o;
  o.path = dir.path();
  o.max_cached = 2;  // every group past two users or two chats empties the caches
  rocksdb_store db(o);
  std::vector<registration> users;
  const std::vector<std::string> names = {"ann", "ben", "cat", "dan", "eve"};
  for (const auto& name : names) {
    auto r = wait_for<registration>([&](auto done) { db.register_account({name, {}}, done); });
    ASSERT_TRUE(r) << name;
    users.push_back(*r);
  }
  // Three rounds over the ten chats of five users: each chat's seq goes 1, 2, 3.
  int n = 0;
  for (std::uint64_t round = 1; round <= 3; ++round) {
    for (std::size_t a = 0; a < names.size(); ++a) {
      for (std::size_t b = a + 1; b < names.size(); ++b) {
        auto m = wait_for<send_outcome>([&](auto done) {
          db.send(
              {users[a].user, users[a].device, names[a], names[b], "m" + std::to_string(n++), "hi"},
              done);
        });
        ASSERT_TRUE(m) << names[a] << " -> " << names[b];
        EXPECT_EQ(m->seq, round) << names[a] << " -> " << names[b];
      }
    }
  }
  auto taken = wait_for<registration>([&](auto done) { db.register_account({"ann", {}}, done); });
  EXPECT_EQ(taken.error(), errc::username_taken) << "a user the cache forgot is still known";
}

INSTANTIATE_TEST_SUITE_P(backends, store_contract, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace parley::store
