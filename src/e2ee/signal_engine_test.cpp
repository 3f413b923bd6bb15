// The Signal-protocol layer between two devices (three for groups), each with its own real
// SQLite store in a temporary folder: X3DH from a bundle, the ratchet both ways, crossing first
// messages, out-of-order and lost messages, tampering, identity changes, safety numbers, and
// sender keys: distribution, group messages, rotation, late joiners.
#include "e2ee/signal_engine.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <random>

#include "client/local_store.hpp"
#include "e2ee/key_check.hpp"
#include "temp_dir.hpp"

namespace parley::e2ee {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t day_ms = 24ull * 3600 * 1000;

struct device {
  std::string name;
  std::int32_t id;
  fs::path file;
  std::unique_ptr<client::local_store> store;
  std::unique_ptr<signal_engine> engine;
  std::optional<key_upload> published;

  device(library_context& lib, std::string n, std::int32_t device_id, fs::path f)
      : name(std::move(n)), id(device_id), file(std::move(f)) {
    open(lib);
    EXPECT_TRUE(engine->create_identity(1'000'000).value());
    published = engine->full_upload(5).value();
  }
  void open(library_context& lib) {
    engine.reset();
    store = std::make_unique<client::local_store>(file);
    engine = std::make_unique<signal_engine>(lib, *store);
  }
  // The bundle a server would hand out: one one-time prekey taken from what was published.
  peer_bundle bundle() {
    peer_bundle b{name,
                  id,
                  published->registration_id,
                  published->identity_key,
                  *published->signed_prekey,
                  std::nullopt};
    if (!published->one_time_prekeys.empty()) {
      b.one_time_prekey = published->one_time_prekeys.front();
      published->one_time_prekeys.erase(published->one_time_prekeys.begin());
    }
    return b;
  }
};

class signal_engine_test : public ::testing::Test {
 protected:
  void SetUp() override {
    alice_ = std::make_unique<device>(lib_, "alice", 1, dir_.path() / "alice" / "local.db");
    bob_ = std::make_unique<device>(lib_, "bob", 2, dir_.path() / "bob" / "local.db");
  }
  void TearDown() override {
    alice_.reset();
    bob_.reset();
  }

  ciphertext seal(device& from, device& to, const std::string& text) {
    auto c = from.engine->encrypt(to.name, to.id, text);
    EXPECT_TRUE(c) << c.error().message();
    return c ? *c : ciphertext{};
  }
  result<std::string> open(device& at, device& from, const ciphertext& c) {
    return at.engine->decrypt(from.name, from.id, c.type, c.bytes);
  }
  void establish() {
    ASSERT_TRUE(alice_->engine->process_bundle(bob_->bundle()));
    ASSERT_EQ(open(*bob_, *alice_, seal(*alice_, *bob_, "hi")).value(), "hi");
    ASSERT_EQ(open(*alice_, *bob_, seal(*bob_, *alice_, "hello")).value(), "hello");
  }

  library_context lib_;
  test_support::temp_dir dir_{"parley_e2ee_test_"};
  std::unique_ptr<device> alice_, bob_;
};

TEST_F(signal_engine_test, a_session_from_a_bundle_carries_messages_both_ways) {
  const auto prekeys_before = bob_->store->prekey_count();
  ASSERT_TRUE(alice_->engine->process_bundle(bob_->bundle()));
  auto first = seal(*alice_, *bob_, "hello bob");
  EXPECT_EQ(first.type, message_type::prekey);  // X3DH rides on the first messages
  EXPECT_EQ(first.bytes.find("hello bob"), std::string::npos);
  EXPECT_EQ(open(*bob_, *alice_, first).value(), "hello bob");
  EXPECT_EQ(bob_->store->prekey_count(), prekeys_before - 1);  // one-time: used once, deleted

  auto reply = seal(*bob_, *alice_, "hello alice");
  EXPECT_EQ(reply.type, message_type::signal);
  EXPECT_EQ(open(*alice_, *bob_, reply).value(), "hello alice");
  auto next = seal(*alice_, *bob_, "after the reply");
  EXPECT_EQ(next.type, message_type::signal);  // the session is confirmed
  EXPECT_EQ(open(*bob_, *alice_, next).value(), "after the reply");
  EXPECT_EQ(alice_->engine->remote_registration_id("bob", 2).value(),
            bob_->published->registration_id);
}

TEST_F(signal_engine_test, a_bundle_without_one_time_prekey_still_makes_a_session) {
  bob_->published->one_time_prekeys.clear();  // the server ran out
  ASSERT_TRUE(alice_->engine->process_bundle(bob_->bundle()));
  EXPECT_EQ(open(*bob_, *alice_, seal(*alice_, *bob_, "no otk")).value(), "no otk");
}

TEST_F(signal_engine_test, first_messages_that_cross_each_other_both_decrypt) {
  ASSERT_TRUE(alice_->engine->process_bundle(bob_->bundle()));
  ASSERT_TRUE(bob_->engine->process_bundle(alice_->bundle()));
  auto from_alice = seal(*alice_, *bob_, "alice first");
  auto from_bob = seal(*bob_, *alice_, "bob first");
  EXPECT_EQ(open(*bob_, *alice_, from_alice).value(), "alice first");
  EXPECT_EQ(open(*alice_, *bob_, from_bob).value(), "bob first");
  // And the conversation goes on, in both directions, several rounds.
  for (int i = 0; i < 3; ++i) {
    const auto a = "a" + std::to_string(i), b = "b" + std::to_string(i);
    EXPECT_EQ(open(*bob_, *alice_, seal(*alice_, *bob_, a)).value(), a);
    EXPECT_EQ(open(*alice_, *bob_, seal(*bob_, *alice_, b)).value(), b);
  }
}

TEST_F(signal_engine_test, out_of_order_and_lost_messages_decrypt_and_replays_do_not) {
  establish();
  std::vector<ciphertext> m;
  for (int i = 0; i < 6; ++i) m.push_back(seal(*alice_, *bob_, "m" + std::to_string(i)));
  EXPECT_EQ(open(*bob_, *alice_, m[5]).value(), "m5");  // the newest first
  EXPECT_EQ(open(*bob_, *alice_, m[1]).value(), "m1");  // then older ones: skipped keys
  EXPECT_EQ(open(*bob_, *alice_, m[0]).value(), "m0");
  // m2..m4 lost in between; the conversation goes on in both directions.
  EXPECT_EQ(open(*alice_, *bob_, seal(*bob_, *alice_, "still here")).value(), "still here");
  EXPECT_EQ(open(*bob_, *alice_, seal(*alice_, *bob_, "m6")).value(), "m6");
  EXPECT_EQ(open(*bob_, *alice_, m[3]).value(), "m3");  // a late one still opens
  auto replay = open(*bob_, *alice_, m[3]);
  ASSERT_FALSE(replay);
  EXPECT_EQ(replay.error(), errc::duplicate_message);
}

TEST_F(signal_engine_test, tampered_or_foreign_bytes_are_errors_not_text) {
  establish();
  auto c = seal(*alice_, *bob_, "genuine");
  auto flipped = c;
  flipped.bytes[flipped.bytes.size() / 2] ^= 0x01;
  auto r = open(*bob_, *alice_, flipped);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::invalid_message);
  auto garbage = bob_->engine->decrypt("alice", 1, message_type::signal, "not a signal message");
  ASSERT_FALSE(garbage);
  EXPECT_EQ(garbage.error(), errc::invalid_message);
  // The genuine one is still fine after the failures: nothing was stored by them.
  EXPECT_EQ(open(*bob_, *alice_, c).value(), "genuine");
  // A SignalMessage from someone without a session.
  auto carol = device(lib_, "carol", 3, dir_.path() / "carol" / "local.db");
  auto none = bob_->engine->decrypt("carol", 3, message_type::signal, c.bytes);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), errc::no_session);
}

// What a malicious server can send: mutated, truncated and extended versions of real messages
// of both types. Each must fail with an error (never crash, never "succeed" as other text),
// and leave nothing behind: every attempt is rolled back, as the messenger does, and the
// genuine messages still open afterwards. Under ASan in `make test`.
TEST_F(signal_engine_test, mutated_messages_fail_cleanly_and_change_nothing) {
  ASSERT_TRUE(alice_->engine->process_bundle(bob_->bundle()));
  const auto first = seal(*alice_, *bob_, "first, with X3DH");  // a PreKeySignalMessage
  std::mt19937 rng(20261128);
  auto mutate = [&](std::string m) {
    switch (rng() % 4) {
      case 0:  // flip bits
        for (int i = 0, n = 1 + static_cast<int>(rng() % 4); i < n && !m.empty(); ++i)
          m[rng() % m.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // truncate
        m.resize(rng() % (m.size() + 1));
        break;
      case 2:  // extend with garbage
        for (int i = 0, n = 1 + static_cast<int>(rng() % 64); i < n; ++i)
          m.push_back(static_cast<char>(rng()));
        break;
      default:  // overwrite a run with garbage
        if (!m.empty()) {
          const auto at = rng() % m.size();
          for (auto i = at; i < m.size() && i < at + 8; ++i) m[i] = static_cast<char>(rng());
        }
    }
    return m;
  };
  auto attack = [&](const ciphertext& genuine, int rounds) {
    int failed = 0;
    for (int i = 0; i < rounds; ++i) {
      const auto bytes = mutate(genuine.bytes);
      if (bytes == genuine.bytes) continue;
      for (auto type : {message_type::prekey, message_type::signal}) {
        client::local_store::transaction tx(*bob_->store);  // rolled back: never committed
        auto r = bob_->engine->decrypt("alice", 1, type, bytes);
        if (!r) {
          ++failed;
        } else {
          // A mutation the MACs cannot see (e.g. in a field they do not cover) may still open:
          // then it opens to the genuine text, never to something else.
          EXPECT_EQ(r->substr(0, 5), "first") << "mutation opened to other text";
        }
      }
    }
    return failed;
  };
  EXPECT_GT(attack(first, 1500), 2900);
  EXPECT_EQ(open(*bob_, *alice_, first).value(), "first, with X3DH");

  const auto reply = seal(*bob_, *alice_, "reply");
  EXPECT_EQ(open(*alice_, *bob_, reply).value(), "reply");
  const auto later = seal(*alice_, *bob_, "first of the ratchet");  // a SignalMessage
  EXPECT_EQ(later.type, message_type::signal);
  EXPECT_GT(attack(later, 1500), 2900);
  EXPECT_EQ(open(*bob_, *alice_, later).value(), "first of the ratchet");
}

TEST_F(signal_engine_test, bundles_with_a_bad_signature_are_refused) {
  auto b = bob_->bundle();
  b.signed_prekey.signature[10] ^= 0x40;
  auto r = alice_->engine->process_bundle(b);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::invalid_bundle);
  EXPECT_FALSE(alice_->engine->has_session("bob", 2));
}

TEST_F(signal_engine_test, the_server_side_signature_check_agrees_with_the_library) {
  const auto& up = *bob_->published;
  EXPECT_TRUE(verify_signed_prekey(up.identity_key, up.signed_prekey->public_key,
                                   up.signed_prekey->signature));
  auto bad = up.signed_prekey->signature;
  bad[0] ^= 1;
  EXPECT_FALSE(verify_signed_prekey(up.identity_key, up.signed_prekey->public_key, bad));
  EXPECT_FALSE(verify_signed_prekey(alice_->published->identity_key, up.signed_prekey->public_key,
                                    up.signed_prekey->signature));
  EXPECT_FALSE(
      verify_signed_prekey("short", up.signed_prekey->public_key, up.signed_prekey->signature));
}

TEST_F(signal_engine_test, safety_numbers_match_on_both_sides_and_change_with_a_reinstall) {
  establish();
  auto at_alice = alice_->engine->safety_number("alice", "bob").value();
  auto at_bob = bob_->engine->safety_number("bob", "alice").value();
  EXPECT_EQ(at_alice, at_bob);
  EXPECT_EQ(at_alice.size(), 60u);
  EXPECT_EQ(at_alice.find_first_not_of("0123456789"), std::string::npos);
  EXPECT_FALSE(alice_->engine->safety_number("alice", "nobody"));

  // Bob reinstalls: a new store, a new identity.
  bob_->engine.reset();
  bob_->store.reset();
  fs::remove_all(dir_.path() / "bob");
  bob_ = std::make_unique<device>(lib_, "bob", 2, dir_.path() / "bob" / "local.db");
  EXPECT_TRUE(alice_->store->take_unseen_identity_changes().empty());
  ASSERT_TRUE(alice_->engine->process_bundle(bob_->bundle()));  // accepted, but recorded
  auto changes = alice_->store->take_unseen_identity_changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].peer, "bob");
  EXPECT_EQ(changes[0].new_key, bob_->published->identity_key);
  EXPECT_NE(changes[0].old_key, changes[0].new_key);
  EXPECT_TRUE(alice_->store->take_unseen_identity_changes().empty());  // shown once
  EXPECT_EQ(alice_->store->identity_changes("bob").size(), 1u);        // kept for good

  EXPECT_EQ(open(*bob_, *alice_, seal(*alice_, *bob_, "to the new bob")).value(), "to the new bob");
  auto renewed = alice_->engine->safety_number("alice", "bob").value();
  EXPECT_NE(renewed, at_alice);
  EXPECT_EQ(renewed, bob_->engine->safety_number("bob", "alice").value());
}

TEST_F(signal_engine_test, a_new_identity_arriving_in_a_message_is_recorded) {
  establish();
  bob_->engine.reset();
  bob_->store.reset();
  fs::remove_all(dir_.path() / "bob");
  bob_ = std::make_unique<device>(lib_, "bob", 2, dir_.path() / "bob" / "local.db");
  ASSERT_TRUE(bob_->engine->process_bundle(alice_->bundle()));
  EXPECT_EQ(open(*alice_, *bob_, seal(*bob_, *alice_, "reinstalled")).value(), "reinstalled");
  auto changes = alice_->store->take_unseen_identity_changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].peer, "bob");
}

TEST_F(signal_engine_test, state_survives_reopening_the_store) {
  establish();
  auto pending = seal(*alice_, *bob_, "across a restart");
  alice_->open(lib_);
  bob_->open(lib_);
  EXPECT_EQ(open(*bob_, *alice_, pending).value(), "across a restart");
  EXPECT_EQ(open(*alice_, *bob_, seal(*bob_, *alice_, "and back")).value(), "and back");
}

TEST_F(signal_engine_test, signed_prekeys_rotate_and_old_ones_expire) {
  const auto first = bob_->published->signed_prekey->id;
  EXPECT_FALSE(bob_->engine->rotate_signed_prekey(1'000'000 + day_ms, 7 * day_ms, 30 * day_ms)
                   .value());  // too young
  auto rotated =
      bob_->engine->rotate_signed_prekey(1'000'000 + 8 * day_ms, 7 * day_ms, 30 * day_ms).value();
  ASSERT_TRUE(rotated);
  ASSERT_TRUE(rotated->signed_prekey);
  EXPECT_NE(rotated->signed_prekey->id, first);
  EXPECT_TRUE(verify_signed_prekey(rotated->identity_key, rotated->signed_prekey->public_key,
                                   rotated->signed_prekey->signature));
  EXPECT_TRUE(bob_->store->signed_prekey(first));  // kept for messages already in flight
  const auto max_age = 70 * day_ms;                // no rotation in the calls below
  ASSERT_TRUE(bob_->engine->rotate_signed_prekey(1'000'000 + 37 * day_ms, max_age, 30 * day_ms));
  EXPECT_TRUE(bob_->store->signed_prekey(first));  // replaced 29 days ago
  ASSERT_TRUE(bob_->engine->rotate_signed_prekey(1'000'000 + 38 * day_ms, max_age, 30 * day_ms));
  EXPECT_FALSE(bob_->store->signed_prekey(first));  // replaced 30 days ago
}

TEST_F(signal_engine_test, a_device_back_after_months_keeps_the_key_it_replaces) {
  // Its only signed prekey is 100 days old: it rotates, and messages queued for it while it
  // was away (built on the old key) must still open.
  ASSERT_TRUE(alice_->engine->process_bundle(bob_->bundle()));
  auto queued = seal(*alice_, *bob_, "sent while bob was away");
  const auto first = bob_->published->signed_prekey->id;
  auto rotated =
      bob_->engine->rotate_signed_prekey(1'000'000 + 100 * day_ms, 7 * day_ms, 30 * day_ms).value();
  ASSERT_TRUE(rotated);
  EXPECT_TRUE(bob_->store->signed_prekey(first));
  EXPECT_EQ(open(*bob_, *alice_, queued).value(), "sent while bob was away");
}

// --- groups: sender keys ------------------------------------------------------------------------

const std::string group = group_of(42);

group_sender self(const device& d) { return {group, d.name, d.id}; }

// `from`'s current sender key for the group, as `at` keeps it after the distribution message.
void give_key(device& from, device& at) {
  auto skdm = from.engine->own_sender_key(self(from));
  ASSERT_TRUE(skdm) << skdm.error().message();
  ASSERT_TRUE(at.engine->process_sender_key(self(from), skdm->message));
}

ciphertext group_seal(device& from, const std::string& text) {
  auto c = from.engine->group_encrypt(self(from), text);
  EXPECT_TRUE(c) << c.error().message();
  return c ? *c : ciphertext{};
}

result<std::string> group_open(device& at, device& from, const ciphertext& c) {
  return at.engine->group_decrypt(self(from), c.bytes);
}

TEST_F(signal_engine_test, group_members_exchange_sender_keys_and_messages) {
  device carol(lib_, "carol", 3, dir_.path() / "carol" / "local.db");
  // No key yet: nothing to encrypt with, nothing to decrypt with.
  auto none = alice_->engine->group_encrypt(self(*alice_), "too early");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), errc::no_sender_key);
  EXPECT_FALSE(alice_->engine->own_sender_key_id(self(*alice_)).value());

  give_key(*alice_, *bob_);
  give_key(*alice_, carol);
  const auto key = alice_->engine->own_sender_key_id(self(*alice_)).value();
  ASSERT_TRUE(key);
  EXPECT_EQ(alice_->engine->own_sender_key(self(*alice_)).value().key_id, *key);  // the same key

  const auto m1 = group_seal(*alice_, "hello group");
  EXPECT_EQ(m1.type, message_type::sender_key);
  EXPECT_EQ(m1.bytes.find("hello group"), std::string::npos);
  EXPECT_TRUE(bob_->engine->has_sender_key_for(self(*alice_), m1.bytes));
  EXPECT_EQ(group_open(*bob_, *alice_, m1).value(), "hello group");
  EXPECT_EQ(group_open(carol, *alice_, m1).value(), "hello group");  // one ciphertext for all

  // Bob and carol answer with their own keys.
  give_key(*bob_, *alice_);
  give_key(*bob_, carol);
  give_key(carol, *alice_);
  give_key(carol, *bob_);
  const auto m2 = group_seal(*bob_, "bob here");
  const auto m3 = group_seal(carol, "carol here");
  EXPECT_EQ(group_open(*alice_, *bob_, m2).value(), "bob here");
  EXPECT_EQ(group_open(carol, *bob_, m2).value(), "bob here");
  EXPECT_EQ(group_open(*alice_, carol, m3).value(), "carol here");
  EXPECT_EQ(group_open(*bob_, carol, m3).value(), "carol here");

  // Out of order within a sender's chain, then a replay.
  std::vector<ciphertext> m;
  for (int i = 0; i < 4; ++i) m.push_back(group_seal(*alice_, "m" + std::to_string(i)));
  EXPECT_EQ(group_open(*bob_, *alice_, m[3]).value(), "m3");
  EXPECT_EQ(group_open(*bob_, *alice_, m[0]).value(), "m0");
  EXPECT_EQ(group_open(*bob_, *alice_, m[2]).value(), "m2");
  auto replay = group_open(*bob_, *alice_, m[2]);
  ASSERT_FALSE(replay);
  EXPECT_EQ(replay.error(), errc::duplicate_message);

  // Tampered bytes, or a message claimed by another sender: errors, never text.
  auto flipped = m[1];
  flipped.bytes[flipped.bytes.size() / 2] ^= 0x04;
  auto bad = group_open(*bob_, *alice_, flipped);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), errc::invalid_message);
  auto garbage = bob_->engine->group_decrypt(self(*alice_), "not a sender key message");
  ASSERT_FALSE(garbage);
  EXPECT_EQ(garbage.error(), errc::invalid_message);
  auto as_carol = bob_->engine->group_decrypt(self(carol), m[1].bytes);  // carol's key id differs
  ASSERT_FALSE(as_carol);
  EXPECT_EQ(as_carol.error(), errc::no_sender_key);
  EXPECT_EQ(group_open(*bob_, *alice_, m[1]).value(), "m1");  // the genuine one still opens

  // Another group is another key: alice's key of group 42 does not open group 43.
  auto elsewhere = bob_->engine->group_decrypt({group_of(43), "alice", 1}, m[0].bytes);
  ASSERT_FALSE(elsewhere);
  EXPECT_EQ(elsewhere.error(), errc::no_sender_key);
}

TEST_F(signal_engine_test, a_message_before_its_key_is_told_apart_and_opens_once_the_key_arrives) {
  auto skdm = alice_->engine->own_sender_key(self(*alice_)).value();
  const auto early = group_seal(*alice_, "sent before bob has the key");
  EXPECT_FALSE(bob_->engine->has_sender_key_for(self(*alice_), early.bytes));
  auto r = group_open(*bob_, *alice_, early);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::no_sender_key);  // keep it: the key may be on its way
  ASSERT_TRUE(bob_->engine->process_sender_key(self(*alice_), skdm.message));
  EXPECT_EQ(group_open(*bob_, *alice_, early).value(), "sent before bob has the key");
  // The same distribution again does not rewind the chain: the message stays used.
  ASSERT_TRUE(bob_->engine->process_sender_key(self(*alice_), skdm.message));
  auto again = group_open(*bob_, *alice_, early);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error(), errc::duplicate_message);
  // Not a distribution message.
  auto junk = bob_->engine->process_sender_key(self(*alice_), "junk");
  ASSERT_FALSE(junk);
  EXPECT_EQ(junk.error(), errc::invalid_message);
}

TEST_F(signal_engine_test, after_a_rotation_old_and_new_keys_read_only_their_own_messages) {
  device carol(lib_, "carol", 3, dir_.path() / "carol" / "local.db");
  device dave(lib_, "dave", 4, dir_.path() / "dave" / "local.db");
  give_key(*alice_, *bob_);
  give_key(*alice_, carol);
  const auto old_key = alice_->engine->own_sender_key_id(self(*alice_)).value();
  const auto before = group_seal(*alice_, "before bob was removed");
  EXPECT_EQ(group_open(*bob_, *alice_, before).value(), "before bob was removed");

  // Bob is removed: alice drops her key; the next one goes to carol (and dave, new) only.
  ASSERT_TRUE(alice_->engine->forget_sender_key(self(*alice_)));
  EXPECT_FALSE(alice_->engine->own_sender_key_id(self(*alice_)).value());
  give_key(*alice_, carol);
  give_key(*alice_, dave);
  const auto new_key = alice_->engine->own_sender_key_id(self(*alice_)).value();
  ASSERT_TRUE(new_key);
  EXPECT_NE(*new_key, *old_key);
  const auto after = group_seal(*alice_, "after bob was removed");

  // Bob, with only the old key, cannot read the new message; carol, with both, reads both.
  auto at_bob = group_open(*bob_, *alice_, after);
  ASSERT_FALSE(at_bob);
  EXPECT_EQ(at_bob.error(), errc::no_sender_key);
  EXPECT_EQ(group_open(carol, *alice_, before).value(), "before bob was removed");
  EXPECT_EQ(group_open(carol, *alice_, after).value(), "after bob was removed");
  // Dave, with only the new key, cannot read the old message.
  auto at_dave = group_open(dave, *alice_, before);
  ASSERT_FALSE(at_dave);
  EXPECT_EQ(at_dave.error(), errc::no_sender_key);
  EXPECT_EQ(group_open(dave, *alice_, after).value(), "after bob was removed");
  // Alice's own old messages cannot be made any more: encrypting uses the new key only.
  EXPECT_EQ(group_open(dave, *alice_, group_seal(*alice_, "still new")).value(), "still new");
}

TEST_F(signal_engine_test, a_late_joiner_reads_from_the_key_step_it_got_on) {
  give_key(*alice_, *bob_);
  const auto first = group_seal(*alice_, "first");
  const auto second = group_seal(*alice_, "second");
  // Carol joins now and gets the key at its current step.
  device carol(lib_, "carol", 3, dir_.path() / "carol" / "local.db");
  give_key(*alice_, carol);
  const auto third = group_seal(*alice_, "third");
  EXPECT_EQ(group_open(carol, *alice_, third).value(), "third");
  // The chain only runs forward: the earlier message keys cannot be derived from the copy
  // (libsignal reports a step before the key's as an already used one).
  for (const auto* c : {&first, &second}) {
    auto r = group_open(carol, *alice_, *c);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), errc::duplicate_message);
  }
  // Bob, who had the key from the start, reads all three.
  EXPECT_EQ(group_open(*bob_, *alice_, first).value(), "first");
  EXPECT_EQ(group_open(*bob_, *alice_, second).value(), "second");
  EXPECT_EQ(group_open(*bob_, *alice_, third).value(), "third");
}

TEST_F(signal_engine_test, sender_keys_survive_a_restart_and_leaving_forgets_them_all) {
  give_key(*alice_, *bob_);
  give_key(*bob_, *alice_);
  const auto pending = group_seal(*alice_, "across a restart");
  alice_->open(lib_);
  bob_->open(lib_);
  EXPECT_EQ(group_open(*bob_, *alice_, pending).value(), "across a restart");
  EXPECT_EQ(group_open(*alice_, *bob_, group_seal(*bob_, "and back")).value(), "and back");

  // Bob leaves: his own key and alice's copy go.
  const auto later = group_seal(*alice_, "after bob left");
  EXPECT_EQ(bob_->engine->forget_group(group).value(), 2u);
  EXPECT_FALSE(bob_->engine->own_sender_key_id(self(*bob_)).value());
  auto r = group_open(*bob_, *alice_, later);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::no_sender_key);
  EXPECT_FALSE(bob_->store->sender_key(group, "alice", 1));
}

TEST_F(signal_engine_test, the_local_store_is_readable_by_its_user_only) {
  struct stat st {};
  ASSERT_EQ(::stat(alice_->file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  ASSERT_EQ(::stat(alice_->file.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0);
}

}  // namespace
}  // namespace parley::e2ee
