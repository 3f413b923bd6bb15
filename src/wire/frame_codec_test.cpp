#include "wire/frame_codec.hpp"

#include <gtest/gtest.h>

#include "wire/username.hpp"

namespace parley::wire {
namespace {

using parley::v2::Frame;

std::optional<protocol_error> decode(const Frame& f, const limits& l = {}) {
  Frame out;
  return decode_request(f.SerializeAsString(), l, out);
}

Frame valid_send() {
  Frame f;
  f.set_request_id(1);
  auto* m = f.mutable_send_message();
  m->set_to("bob");
  m->set_client_msg_id("c1");
  m->set_payload("hello");
  m->set_type(parley::v2::CIPHER_TYPE_SIGNAL_MESSAGE);
  return f;
}

std::string public_key(char fill) {
  std::string k(33, fill);
  k[0] = '\x05';
  return k;
}

Frame valid_upload(int one_time = 3) {
  Frame f;
  f.set_request_id(2);
  auto* u = f.mutable_upload_keys();
  u->set_identity_key(public_key('i'));
  u->set_registration_id(77);
  u->mutable_signed_prekey()->set_id(1);
  u->mutable_signed_prekey()->set_public_key(public_key('s'));
  u->mutable_signed_prekey()->set_signature(std::string(64, 'g'));
  for (int i = 0; i < one_time; ++i) {
    auto* k = u->add_one_time_prekeys();
    k->set_id(static_cast<std::uint32_t>(i + 1));
    k->set_public_key(public_key('o'));
  }
  return f;
}

TEST(frame_codec, a_send_must_say_which_signal_message_it_carries) {
  Frame f = valid_send();
  f.mutable_send_message()->set_type(parley::v2::CIPHER_TYPE_UNSPECIFIED);
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f.mutable_send_message()->set_type(static_cast<parley::v2::CipherType>(7));
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f.mutable_send_message()->set_type(parley::v2::CIPHER_TYPE_PREKEY_MESSAGE);
  EXPECT_FALSE(decode(f));
}

TEST(frame_codec, key_uploads_are_checked_for_shape) {
  EXPECT_FALSE(decode(valid_upload()));

  Frame f = valid_upload();
  f.mutable_upload_keys()->set_identity_key(std::string(32, 'x'));  // no type byte
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_BAD_KEY);
  f = valid_upload();
  f.mutable_upload_keys()->set_identity_key("\x06" + std::string(32, 'x'));  // wrong type
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_BAD_KEY);
  f = valid_upload();
  f.mutable_upload_keys()->mutable_signed_prekey()->set_public_key(public_key('s') + "x");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_BAD_KEY);
  f = valid_upload();
  f.mutable_upload_keys()->mutable_signed_prekey()->set_signature(std::string(63, 'g'));
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_BAD_SIGNATURE);
  f = valid_upload();
  f.mutable_upload_keys()->mutable_one_time_prekeys(1)->set_public_key("short");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_BAD_KEY);
  f = valid_upload();
  f.mutable_upload_keys()->mutable_one_time_prekeys(2)->set_id(1);  // twice
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f = valid_upload();
  f.mutable_upload_keys()->set_registration_id(0);
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(frame_codec, one_upload_holds_at_most_100_one_time_prekeys) {
  limits l;
  EXPECT_FALSE(decode(valid_upload(static_cast<int>(l.max_prekeys_per_upload)), l));
  auto e = decode(valid_upload(static_cast<int>(l.max_prekeys_per_upload) + 1), l);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, parley::v2::ERROR_CODE_TOO_MANY_PREKEYS);
}

TEST(frame_codec, accepts_a_valid_send) {
  Frame out;
  EXPECT_FALSE(decode_request(valid_send().SerializeAsString(), {}, out));
  EXPECT_EQ(out.send_message().payload(), "hello");
}

TEST(frame_codec, garbage_is_a_bad_frame) {
  Frame out;
  auto e = decode_request("\xff\xff\xff\xff garbage", {}, out);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, parley::v2::ERROR_CODE_BAD_FRAME);
}

TEST(frame_codec, a_frame_without_body_is_a_bad_frame) {
  Frame f;
  f.set_request_id(3);
  auto e = decode(f);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, parley::v2::ERROR_CODE_BAD_FRAME);
}

TEST(frame_codec, payload_limit_is_enforced_at_the_boundary) {
  limits l;
  Frame f = valid_send();
  f.mutable_send_message()->set_payload(std::string(l.max_payload_bytes, 'x'));
  EXPECT_FALSE(decode(f, l));
  f.mutable_send_message()->set_payload(std::string(l.max_payload_bytes + 1, 'x'));
  auto e = decode(f, l);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, parley::v2::ERROR_CODE_PAYLOAD_TOO_LARGE);
}

TEST(frame_codec, frame_limit_is_enforced) {
  limits l;
  l.max_frame_bytes = 100;
  Frame f = valid_send();
  f.mutable_send_message()->set_payload(std::string(200, 'x'));
  auto e = decode(f, l);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, parley::v2::ERROR_CODE_BAD_FRAME);
  // At the boundary: a frame of exactly max_frame_bytes passes, one byte more does not.
  f.mutable_send_message()->set_payload("");
  const std::size_t without = f.ByteSizeLong();  // an empty payload is not on the wire
  // A payload of n < 128 bytes adds its tag, a 1-byte length and the n bytes.
  f.mutable_send_message()->set_payload(std::string(100 - without - 2, 'x'));
  ASSERT_EQ(f.ByteSizeLong(), 100u);
  EXPECT_FALSE(decode(f, l));
  f.mutable_send_message()->set_payload(std::string(100 - without - 1, 'x'));
  ASSERT_EQ(f.ByteSizeLong(), 101u);
  ASSERT_TRUE(decode(f, l));
  EXPECT_EQ(decode(f, l)->code, parley::v2::ERROR_CODE_BAD_FRAME);
}

TEST(frame_codec, a_group_name_is_1_to_64_bytes) {
  Frame f;
  auto* c = f.mutable_create_group();
  c->set_client_request_id("r1");
  c->add_members("bob");
  c->set_name(std::string(64, 'n'));
  EXPECT_FALSE(decode(f));
  c->set_name(std::string(65, 'n'));
  ASSERT_TRUE(decode(f));
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  c->set_name("");
  ASSERT_TRUE(decode(f));
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(frame_codec, client_msg_id_must_be_1_to_64_bytes) {
  Frame f = valid_send();
  f.mutable_send_message()->set_client_msg_id("");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f.mutable_send_message()->set_client_msg_id(std::string(65, 'a'));
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f.mutable_send_message()->set_client_msg_id(std::string(64, 'a'));
  EXPECT_FALSE(decode(f));
}

TEST(frame_codec, server_frames_from_a_client_are_unsupported) {
  Frame f;
  f.mutable_envelope()->set_payload("spoof");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_UNSUPPORTED);
}

TEST(frame_codec, ack_must_carry_1_to_1024_cursors) {
  Frame f;
  f.mutable_ack();
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  for (int i = 0; i < 1024; ++i) {
    auto* c = f.mutable_ack()->add_cursors();
    c->set_chat_id(static_cast<std::uint64_t>(i + 1));
    c->set_seq(7);
  }
  EXPECT_FALSE(decode(f));
  auto* c = f.mutable_ack()->add_cursors();
  c->set_chat_id(5000);
  c->set_seq(1);
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(frame_codec, presence_subscriptions_name_1_to_256_users) {
  Frame f;
  f.mutable_subscribe_presence();
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  for (int i = 0; i < 256; ++i)
    f.mutable_subscribe_presence()->add_usernames("user" + std::to_string(i));
  EXPECT_FALSE(decode(f));
  f.mutable_subscribe_presence()->add_usernames("user256");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(frame_codec, a_new_group_lists_at_most_1024_entries) {
  Frame f;
  auto* c = f.mutable_create_group();
  c->set_name("g");
  c->set_client_request_id("r1");
  // Repeats are allowed (the store counts distinct members); the frame is bounded by entries.
  for (int i = 0; i < 1024; ++i) c->add_members("user" + std::to_string(i % 10));
  EXPECT_FALSE(decode(f));
  c->add_members("user1");
  ASSERT_TRUE(decode(f));
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_GROUP_FULL);
}

TEST(frame_codec, an_upload_id_is_1_to_1024_url_safe_characters) {
  Frame f;
  auto* q = f.mutable_request_upload_parts();
  q->set_media_id(std::string(32, 'a'));
  q->set_upload_id(std::string(1024, 'u'));
  EXPECT_FALSE(decode(f));
  q->set_upload_id("AZaz09._~+/=-");
  EXPECT_FALSE(decode(f));
  q->set_upload_id(std::string(1025, 'u'));
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  q->set_upload_id("");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  q->set_upload_id("a b");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  q->set_upload_id("u&x=1");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  q->set_upload_id("u");
  q->set_media_id("not-hex");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(frame_codec, ack_cursors_need_a_chat_and_a_seq) {
  Frame f;
  auto* c = f.mutable_ack()->add_cursors();
  c->set_chat_id(3);
  c->set_seq(9);
  EXPECT_FALSE(decode(f));
  c->set_seq(0);
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  c->set_seq(9);
  c->set_chat_id(0);
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(frame_codec, a_send_names_its_chat_exactly_once) {
  Frame f = valid_send();
  f.mutable_send_message()->set_chat_id(42);  // and `to`
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f.mutable_send_message()->clear_to();
  EXPECT_FALSE(decode(f));
  f.mutable_send_message()->set_chat_id(0);  // neither
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f.mutable_send_message()->set_to("Not A Name");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(frame_codec, mark_read_and_get_status_need_a_chat_and_a_seq) {
  Frame f;
  f.mutable_mark_read()->set_chat_id(3);
  f.mutable_mark_read()->set_up_to_seq(1);
  EXPECT_FALSE(decode(f));
  f.mutable_mark_read()->set_up_to_seq(0);
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f.mutable_mark_read()->set_up_to_seq(1);
  f.mutable_mark_read()->set_chat_id(0);
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);

  Frame s;
  s.mutable_get_status()->set_chat_id(3);
  s.mutable_get_status()->set_seq(2);
  EXPECT_FALSE(decode(s));
  s.mutable_get_status()->set_seq(0);
  EXPECT_EQ(decode(s)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  s.mutable_get_status()->set_seq(2);
  s.mutable_get_status()->set_chat_id(0);
  EXPECT_EQ(decode(s)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(frame_codec, history_names_its_chat_once_and_pages_at_most_100) {
  const limits l;
  Frame f;
  f.mutable_get_history()->set_peer("bob");
  f.mutable_get_history()->set_limit(static_cast<std::uint32_t>(l.max_history_limit));
  EXPECT_FALSE(decode(f, l));
  f.mutable_get_history()->set_limit(0);  // the default
  f.mutable_get_history()->set_before_seq(12);
  EXPECT_FALSE(decode(f, l));
  f.mutable_get_history()->set_limit(static_cast<std::uint32_t>(l.max_history_limit) + 1);
  EXPECT_EQ(decode(f, l)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f.mutable_get_history()->set_limit(10);
  f.mutable_get_history()->set_chat_id(7);  // and peer
  EXPECT_EQ(decode(f, l)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
  f.mutable_get_history()->clear_peer();
  EXPECT_FALSE(decode(f, l));
  f.mutable_get_history()->set_chat_id(0);  // neither
  EXPECT_EQ(decode(f, l)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(frame_codec, register_checks_the_username) {
  Frame f;
  f.mutable_register_()->set_username("Alice!");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_USERNAME);
}

TEST(frame_codec, authenticate_needs_a_32_byte_token) {
  Frame f;
  f.mutable_authenticate()->set_device_id(1);
  f.mutable_authenticate()->set_token("short");
  EXPECT_EQ(decode(f)->code, parley::v2::ERROR_CODE_INVALID_ARGUMENT);
}

TEST(username, rules) {
  EXPECT_TRUE(is_valid_username("bob"));
  EXPECT_TRUE(is_valid_username("a.b_c9"));
  EXPECT_TRUE(is_valid_username(std::string(32, 'a')));
  EXPECT_FALSE(is_valid_username("ab"));
  EXPECT_FALSE(is_valid_username(std::string(33, 'a')));
  EXPECT_FALSE(is_valid_username("Bob"));
  EXPECT_FALSE(is_valid_username("bo b"));
  EXPECT_FALSE(is_valid_username("bob\xc3\xa9"));
}

}  // namespace
}  // namespace parley::wire
