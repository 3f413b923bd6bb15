// The messenger's receiving side without a server: Envelopes made by real engines (each device
// with its own SQLite store) are opened as a parleyd would push them. Contents, group messages
// waiting for their sender key and released by it, group events and the rotation they cause,
// and group receipts. Sending (send_group) needs a server: tests/integration/e2ee_test.cpp.
#include "client/messenger.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "client/media_files.hpp"
#include "client/padding.hpp"
#include "media/chunked_cipher.hpp"
#include "temp_dir.hpp"

namespace parley::client {
namespace {

namespace fs = std::filesystem;
namespace v2 = parley::v2;
namespace content = parley::content::v1;

constexpr std::uint64_t group_chat = 42;
constexpr std::uint64_t now = 1'000'000;

// A device: its store, an unconnected client and a messenger on them, keys published.
struct device {
  device(boost::asio::io_context& io, e2ee::library_context& lib, const fs::path& dir,
         std::string n, std::int32_t device_id)
      : name(std::move(n)),
        id(device_id),
        store(std::make_unique<local_store>(dir / name / "local.db")),
        api(io.get_executor()),
        m(std::make_unique<messenger>(api, *store, lib, name, static_cast<std::uint64_t>(id))) {
    EXPECT_TRUE(m->engine().create_identity(now).value());
    published = m->engine().full_upload(3).value();
  }
  e2ee::peer_bundle bundle() {
    e2ee::peer_bundle b{name, id, published.registration_id, published.identity_key,
                        *published.signed_prekey, std::nullopt};
    b.one_time_prekey = published.one_time_prekeys.back();
    published.one_time_prekeys.pop_back();
    return b;
  }
  e2ee::group_sender self() const { return {e2ee::group_of(group_chat), name, id}; }

  std::string name;
  std::int32_t id;
  std::unique_ptr<local_store> store;
  client api;
  std::unique_ptr<messenger> m;
  e2ee::key_upload published;
};

class messenger_test : public ::testing::Test {
 protected:
  void SetUp() override {
    alice_ = std::make_unique<device>(io_, lib_, dir_.path(), "alice", 1);
    bob_ = std::make_unique<device>(io_, lib_, dir_.path(), "bob", 2);
  }

  v2::Envelope envelope(std::uint64_t chat, std::uint64_t seq, const device& from,
                        v2::CipherType type, std::string payload) {
    v2::Envelope e;
    e.set_chat_id(chat);
    e.set_seq(seq);
    e.set_message_id(++next_message_id_);
    e.set_from(from.name);
    e.set_from_device(static_cast<std::uint64_t>(from.id));
    e.set_sent_at_ms(now + seq);
    e.set_type(type);
    e.set_payload(std::move(payload));
    return e;
  }

  // A 1:1 message from `from` to `to` in chat 7 carrying `plaintext` (padded here).
  v2::Envelope pairwise(device& from, device& to, const std::string& plaintext) {
    if (!from.m->engine().has_session(to.name, to.id)) {
      EXPECT_TRUE(from.m->engine().process_bundle(to.bundle()));
    }
    auto c = from.m->engine().encrypt(to.name, to.id, pad(plaintext));
    EXPECT_TRUE(c) << c.error().message();
    return envelope(7, ++pairwise_seq_, from,
                    c->type == e2ee::message_type::prekey ? v2::CIPHER_TYPE_PREKEY_MESSAGE
                                                          : v2::CIPHER_TYPE_SIGNAL_MESSAGE,
                    c->bytes);
  }

  static std::string text(const std::string& t) {
    content::Content c;
    c.set_text(t);
    return c.SerializeAsString();
  }

  // `from`'s current sender key for the group, as a 1:1 Content.
  static std::string sender_key_of(device& from) {
    auto skdm = from.m->engine().own_sender_key(from.self());
    EXPECT_TRUE(skdm) << skdm.error().message();
    content::Content c;
    c.mutable_sender_key()->set_chat_id(group_chat);
    c.mutable_sender_key()->set_message(skdm ? skdm->message : "");
    return c.SerializeAsString();
  }

  // A group message of `from` with its current sender key.
  v2::Envelope group_message(device& from, std::uint64_t seq, const std::string& t) {
    auto c = from.m->engine().group_encrypt(from.self(), pad(text(t)));
    EXPECT_TRUE(c) << c.error().message();
    return envelope(group_chat, seq, from, v2::CIPHER_TYPE_SENDER_KEY_MESSAGE, c ? c->bytes : "");
  }

  v2::Envelope event(std::uint64_t seq, const std::string& from, v2::GroupChange change,
                     const std::string& user, const std::string& name = {}) {
    v2::Envelope e;
    e.set_chat_id(group_chat);
    e.set_seq(seq);
    e.set_message_id(++next_message_id_);
    e.set_from(from);
    e.set_from_device(from.empty() ? 0 : 1);
    e.set_sent_at_ms(now + seq);
    e.mutable_event()->set_change(change);
    e.mutable_event()->set_user(user);
    e.mutable_event()->set_name(name);
    return e;
  }

  boost::asio::io_context io_;
  e2ee::library_context lib_;
  test_support::temp_dir dir_{"parley_messenger_test_"};
  std::unique_ptr<device> alice_, bob_;
  std::uint64_t next_message_id_ = 1000;
  std::uint64_t pairwise_seq_ = 0;
};

TEST_F(messenger_test, a_text_travels_as_a_content_and_anything_else_is_undecryptable) {
  auto opened = bob_->m->open(pairwise(*alice_, *bob_, text("hello bob")));
  EXPECT_EQ(opened.what, opened_message::kind::text);
  EXPECT_EQ(opened.text, "hello bob");
  // Padded bytes that are not a Content (a bare text, as before Contents) are not shown.
  opened = bob_->m->open(pairwise(*alice_, *bob_, "\xff\xff\xff not a Content"));
  EXPECT_EQ(opened.what, opened_message::kind::undecryptable);
  const auto history = bob_->store->history("alice", 10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].text, "hello bob");
  EXPECT_EQ(history[0].chat_id, 7u);
  EXPECT_FALSE(history[1].problem.empty());
  EXPECT_EQ(bob_->store->chat_of("alice"), 7u);
}

TEST_F(messenger_test, a_group_message_waits_for_its_key_and_the_key_releases_it) {
  bob_->store->set_group(group_chat, "friends");
  // The group's chat drains before the 1:1 chat that carries alice's key.
  const auto key_message = pairwise(*alice_, *bob_, sender_key_of(*alice_));
  const auto early = group_message(*alice_, 3, "before the key");
  auto opened = bob_->m->open(early);
  EXPECT_EQ(opened.what, opened_message::kind::pending) << opened.problem;
  EXPECT_EQ(bob_->m->open(early).what, opened_message::kind::duplicate);  // kept once
  EXPECT_EQ(bob_->store->pending_in(group_chat).size(), 1u);
  EXPECT_TRUE(bob_->store->chat_history(group_chat, 10).empty());
  EXPECT_TRUE(bob_->m->take_released().empty());

  opened = bob_->m->open(key_message);
  EXPECT_EQ(opened.what, opened_message::kind::sender_key);
  EXPECT_TRUE(opened.text.empty());  // nothing to show
  const auto released = bob_->m->take_released();
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].text, "before the key");
  EXPECT_EQ(released[0].peer, "alice");
  EXPECT_EQ(released[0].seq, 3u);
  EXPECT_TRUE(bob_->m->take_released().empty());  // returned once
  EXPECT_TRUE(bob_->store->pending_in(group_chat).empty());
  // A repeated push of the key message is known: not decrypted again, not shown.
  EXPECT_EQ(bob_->m->open(key_message).what, opened_message::kind::duplicate);

  // Later messages open at once; the group's history is in the chat's order, the key message
  // not in it, and the 1:1 history with alice holds no group message.
  opened = bob_->m->open(group_message(*alice_, 4, "with the key"));
  EXPECT_EQ(opened.what, opened_message::kind::text);
  EXPECT_EQ(opened.text, "with the key");
  const auto history = bob_->store->chat_history(group_chat, 10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].text, "before the key");
  EXPECT_EQ(history[1].text, "with the key");
  EXPECT_TRUE(bob_->store->history("alice", 10).empty());
  EXPECT_NE(bob_->store->chat_of("alice"), group_chat);
}

TEST_F(messenger_test, tampered_group_messages_are_undecryptable_not_pending) {
  bob_->m->open(pairwise(*alice_, *bob_, sender_key_of(*alice_)));
  auto e = group_message(*alice_, 2, "genuine");
  (*e.mutable_payload())[e.payload().size() - 3] ^= 0x10;  // in the signature
  auto opened = bob_->m->open(e);
  EXPECT_EQ(opened.what, opened_message::kind::undecryptable);
  EXPECT_FALSE(opened.problem.empty());
  EXPECT_TRUE(bob_->store->pending_in(group_chat).empty());
  const auto history = bob_->store->chat_history(group_chat, 10);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_TRUE(history[0].text.empty());
}

TEST_F(messenger_test, events_are_recorded_and_a_removal_retires_the_key_its_member_had) {
  const auto key = bob_->m->engine().own_sender_key(bob_->self()).value();
  bob_->store->add_sender_key_holder(group_chat, "alice", {key.key_id, 1, true});
  bob_->store->add_sender_key_holder(group_chat, "carol", {key.key_id, 1, true});

  v2::Envelope created = event(1, "alice", v2::GROUP_CHANGE_CREATE, {}, "friends");
  created.mutable_event()->add_members("alice");
  created.mutable_event()->add_members("bob");
  created.mutable_event()->add_members("carol");
  auto opened = bob_->m->open(created);
  EXPECT_EQ(opened.what, opened_message::kind::event);
  EXPECT_EQ(opened.text, "alice created the group \"friends\" with bob, carol");
  ASSERT_TRUE(bob_->store->group(group_chat));
  EXPECT_EQ(bob_->store->group(group_chat)->name, "friends");
  EXPECT_EQ(bob_->store->groups_named("friends").size(), 1u);

  // An addition changes no key: dave gets the current one at the next send, at its step.
  EXPECT_EQ(bob_->m->open(event(2, "alice", v2::GROUP_CHANGE_ADD, "dave")).text,
            "alice added dave");
  EXPECT_EQ(bob_->m->engine().own_sender_key_id(bob_->self()).value(), key.key_id);
  // A removal of a member who holds bob's key retires it, and who had it.
  EXPECT_EQ(bob_->m->open(event(3, "alice", v2::GROUP_CHANGE_REMOVE, "carol")).text,
            "alice removed carol");
  EXPECT_FALSE(bob_->m->engine().own_sender_key_id(bob_->self()).value());
  EXPECT_TRUE(bob_->store->sender_key_holders(group_chat).empty());
  // A new key; dave leaves without ever having had it: it stays.
  const auto next = bob_->m->engine().own_sender_key(bob_->self()).value();
  EXPECT_NE(next.key_id, key.key_id);
  bob_->store->add_sender_key_holder(group_chat, "alice", {next.key_id, 1, true});
  EXPECT_EQ(bob_->m->open(event(4, "dave", v2::GROUP_CHANGE_LEAVE, "dave")).text, "dave left");
  EXPECT_EQ(bob_->m->engine().own_sender_key_id(bob_->self()).value(), next.key_id);
  EXPECT_EQ(bob_->m->open(event(5, "", v2::GROUP_CHANGE_PROMOTE, "bob")).text,
            "bob is now an admin (the last admin left)");
  EXPECT_EQ(bob_->m->open(event(6, "bob", v2::GROUP_CHANGE_RENAME, {}, "pals")).text,
            "bob renamed the group to \"pals\"");
  EXPECT_EQ(bob_->store->group(group_chat)->name, "pals");

  // The history holds every event in order; a repeated push is a duplicate.
  const auto history = bob_->store->chat_history(group_chat, 10);
  ASSERT_EQ(history.size(), 6u);
  EXPECT_EQ(history[2].kind, message_kind::event);
  EXPECT_EQ(history[2].text, "alice removed carol");
  EXPECT_EQ(bob_->m->open(created).what, opened_message::kind::duplicate);

  // Bob is removed: every sender key of the group goes, his own at once, alice's copy when
  // the drain is over.
  bob_->m->open(pairwise(*alice_, *bob_, sender_key_of(*alice_)));
  ASSERT_TRUE(bob_->store->sender_key(e2ee::group_of(group_chat), "alice", 1));
  EXPECT_EQ(bob_->m->open(event(7, "alice", v2::GROUP_CHANGE_REMOVE, "bob")).what,
            opened_message::kind::event);
  EXPECT_FALSE(bob_->m->engine().own_sender_key_id(bob_->self()).value());
  EXPECT_FALSE(bob_->store->group(group_chat)->member);
  EXPECT_TRUE(bob_->store->sender_key(e2ee::group_of(group_chat), "alice", 1));
  ASSERT_TRUE(bob_->m->settle_left_groups());
  EXPECT_FALSE(bob_->store->sender_key(e2ee::group_of(group_chat), "alice", 1));
}

TEST_F(messenger_test, a_key_that_arrives_after_leaving_releases_what_waited_and_is_not_kept) {
  bob_->store->set_group(group_chat, "friends");
  const auto key_message = pairwise(*alice_, *bob_, sender_key_of(*alice_));
  const auto waiting = group_message(*alice_, 2, "sent while bob was a member");
  EXPECT_EQ(bob_->m->open(waiting).what, opened_message::kind::pending);
  EXPECT_EQ(bob_->m->open(event(3, "alice", v2::GROUP_CHANGE_REMOVE, "bob")).what,
            opened_message::kind::event);
  EXPECT_EQ(bob_->m->open(key_message).what, opened_message::kind::sender_key);
  const auto released = bob_->m->take_released();
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].text, "sent while bob was a member");
  ASSERT_TRUE(bob_->m->settle_left_groups());  // bob is still out when the drain ends
  EXPECT_FALSE(bob_->store->sender_key(e2ee::group_of(group_chat), "alice", 1));
}

// Bob, removed and added again: alice's new key reaches him in their 1:1 chat, which drains
// before the group (a lower chat id), so it comes while he still counts himself out, and
// again when the removal and the ADD drain after it. Either way it is kept, and opens what
// alice sends after the ADD.
TEST_F(messenger_test, a_key_that_drains_before_this_accounts_re_add_is_kept) {
  bob_->store->set_group(group_chat, "friends");
  const auto gid = e2ee::group_of(group_chat);
  bob_->m->open(pairwise(*alice_, *bob_, sender_key_of(*alice_)));
  EXPECT_EQ(bob_->m->open(group_message(*alice_, 2, "m1")).text, "m1");

  // The removal, seen in an earlier drain.
  EXPECT_EQ(bob_->m->open(event(3, "alice", v2::GROUP_CHANGE_REMOVE, "bob")).what,
            opened_message::kind::event);
  ASSERT_TRUE(bob_->m->settle_left_groups());
  EXPECT_FALSE(bob_->store->sender_key(gid, "alice", 1));

  // Alice rotated at the removal; after the ADD her new key goes to bob, then m2.
  ASSERT_TRUE(alice_->m->engine().forget_sender_key(alice_->self()));
  const auto new_key = pairwise(*alice_, *bob_, sender_key_of(*alice_));
  const auto m2 = group_message(*alice_, 5, "m2 after the re-add");
  const auto m3 = group_message(*alice_, 6, "m3");
  EXPECT_EQ(bob_->m->open(new_key).what, opened_message::kind::sender_key);  // bob still out
  EXPECT_EQ(bob_->m->open(event(4, "alice", v2::GROUP_CHANGE_ADD, "bob")).what,
            opened_message::kind::event);
  EXPECT_TRUE(bob_->store->group(group_chat)->member);
  const auto opened = bob_->m->open(m2);
  EXPECT_EQ(opened.what, opened_message::kind::text);
  EXPECT_EQ(opened.text, "m2 after the re-add");
  ASSERT_TRUE(bob_->m->settle_left_groups());
  EXPECT_TRUE(bob_->store->sender_key(gid, "alice", 1));
  EXPECT_EQ(bob_->m->open(m3).text, "m3");
}

// The same with the removal and the ADD in one drain, after the key: the removal must not
// take the key that the ADD needs.
TEST_F(messenger_test, a_removal_and_re_add_in_one_drain_keep_the_key_that_came_first) {
  bob_->store->set_group(group_chat, "friends");
  bob_->m->open(pairwise(*alice_, *bob_, sender_key_of(*alice_)));
  EXPECT_EQ(bob_->m->open(group_message(*alice_, 2, "m1")).text, "m1");

  ASSERT_TRUE(alice_->m->engine().forget_sender_key(alice_->self()));
  const auto new_key = pairwise(*alice_, *bob_, sender_key_of(*alice_));
  EXPECT_EQ(bob_->m->open(new_key).what, opened_message::kind::sender_key);
  EXPECT_EQ(bob_->m->open(event(3, "alice", v2::GROUP_CHANGE_REMOVE, "bob")).what,
            opened_message::kind::event);
  EXPECT_EQ(bob_->m->open(event(4, "alice", v2::GROUP_CHANGE_ADD, "bob")).what,
            opened_message::kind::event);
  const auto opened = bob_->m->open(group_message(*alice_, 5, "m2 after the re-add"));
  EXPECT_EQ(opened.what, opened_message::kind::text);
  EXPECT_EQ(opened.text, "m2 after the re-add");
  ASSERT_TRUE(bob_->m->settle_left_groups());
  EXPECT_TRUE(bob_->store->sender_key(e2ee::group_of(group_chat), "alice", 1));
}

TEST_F(messenger_test, a_group_receipt_without_user_is_every_other_members_watermark) {
  bob_->store->set_group(group_chat, "friends");
  for (std::uint64_t seq : {3, 5}) {
    ASSERT_TRUE(bob_->store->add_message({100 + seq, group_chat, seq, "bob",
                                          message_direction::outgoing, now, "mine", {}}));
  }
  auto status = [&](std::uint64_t seq) { return bob_->store->message(100 + seq)->status; };
  EXPECT_EQ(status(3), message_status::sent);
  v2::Receipt r;
  r.set_chat_id(group_chat);
  r.set_status(v2::MESSAGE_STATUS_DELIVERED);
  r.set_up_to_seq(4);
  auto apply = [&] {
    auto moved = bob_->m->apply_receipt(r);
    EXPECT_TRUE(moved) << describe(moved.error());
    return moved && *moved;
  };
  EXPECT_TRUE(apply());
  EXPECT_FALSE(apply());  // known already
  EXPECT_EQ(status(3), message_status::delivered);
  EXPECT_EQ(status(5), message_status::sent);
  r.set_status(v2::MESSAGE_STATUS_READ);
  r.set_up_to_seq(5);
  EXPECT_TRUE(apply());
  EXPECT_EQ(status(3), message_status::read);
  EXPECT_EQ(status(5), message_status::read);
  EXPECT_EQ(bob_->store->last_sent_up_to(group_chat, 4)->seq, 3u);
  // The group's messages are not bob's 1:1 chat with anyone.
  EXPECT_FALSE(bob_->store->chat_of("bob"));
}

// A received file message's media id names the download's work file in the profile: only 32
// lowercase hex digits pass, so a sender (or a server) cannot name a path with it.
TEST(media_problem, a_media_id_must_be_32_lowercase_hex_digits) {
  parley::content::v1::Media m;
  m.set_key(std::string(parley::media::media_key_bytes, 'k'));
  m.set_sha256(std::string(parley::media::media_sha256_bytes, 's'));
  m.set_plain_size(1000);
  m.set_size(parley::media::ciphertext_size(1000));
  m.set_media_id(std::string(32, 'a'));
  EXPECT_FALSE(media_problem(m));
  for (const std::string& bad : {std::string("../../.ssh/authorized_keys00000000").substr(0, 32),
                                 std::string("/home/victim/.bashrc") + std::string(12, '0'),
                                 std::string(31, 'a') + std::string(1, '\0'), std::string(32, 'A'),
                                 std::string(31, 'a'), std::string(33, 'a')}) {
    m.set_media_id(bad);
    const auto problem = media_problem(m);
    ASSERT_TRUE(problem) << bad;
    EXPECT_EQ(*problem, "a file message without a valid media id");
  }
}

}  // namespace
}  // namespace parley::client
