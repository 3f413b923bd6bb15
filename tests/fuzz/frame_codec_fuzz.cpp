// Fuzz target for what parses peer bytes: the server's WebSocket frame parser (headers, close
// payloads, UTF-8), the server's request decoder, the client's push decoder, and the CLI's
// rendering of payload text. With clang's libFuzzer:
//   clang++ -fsanitize=fuzzer,address ... -DPARLEY_LIBFUZZER
// Without it (gcc, and in `make test`) the built-in driver below runs a fixed number of
// deterministic mutations of valid frames, so the target cannot rot and ASan sees them all.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cli/json.hpp"
#include "wire/frame_codec.hpp"
#include "ws/frame.hpp"
#include "ws_client_frame.hpp"

namespace {

// Parses `bytes` as a stream of client WebSocket frames, as ws::connection does.
void parse_ws_frames(std::string bytes) {
  constexpr std::uint64_t max_payload = 64 * 1024;
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    const auto r =
        parley::ws::parse_client_header(std::string_view(bytes).substr(pos), max_payload);
    if (r.status != parley::ws::parse_status::complete) return;
    const auto& h = r.header;
    if (h.payload_size > max_payload) std::abort();  // the limit must hold
    if (bytes.size() - pos - h.header_size < h.payload_size) return;
    char* payload = bytes.data() + pos + h.header_size;
    const auto n = static_cast<std::size_t>(h.payload_size);
    parley::ws::unmask(payload, n, h.mask);
    if (h.op == parley::ws::opcode::close) {
      parley::ws::close_code error{};
      (void)parley::ws::valid_close_payload(std::string_view(payload, n), error);
    }
    (void)parley::ws::is_valid_utf8(std::string_view(payload, n));
    pos += h.header_size + n;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  parse_ws_frames(std::string(bytes));
  parley::wire::limits limits;
  parley::v2::Frame request;
  if (!parley::wire::decode_request(bytes, limits, request)) {
    // Whatever decodes must re-encode, and keep the limits the server relies on: a
    // SendMessage payload within the limit, naming its chat exactly once; an Ack of 1-1,024
    // cursors, each with a chat and a seq.
    if (request.has_send_message()) {
      const auto& m = request.send_message();
      if (m.payload().size() > limits.max_payload_bytes) std::abort();
      if ((m.chat_id() != 0) == !m.to().empty()) std::abort();
    }
    if (request.has_ack()) {
      const auto& a = request.ack();
      if (a.cursors_size() == 0 ||
          static_cast<std::size_t>(a.cursors_size()) > limits.max_ack_cursors) {
        std::abort();
      }
      for (const auto& c : a.cursors()) {
        if (c.chat_id() == 0 || c.seq() == 0) std::abort();
      }
    }
    (void)parley::wire::encode(request);
  }
  parley::v2::Frame push;
  (void)parley::wire::decode_push(bytes, push);
  (void)parley::cli::json_string(bytes);
  (void)parley::cli::printable(bytes);
  return 0;
}

#ifndef PARLEY_LIBFUZZER
namespace {

std::vector<std::string> seeds() {
  std::vector<std::string> out;
  parley::v2::Frame f;
  f.set_request_id(7);
  auto* m = f.mutable_send_message();
  m->set_to("bob");
  m->set_client_msg_id("c1");
  m->set_payload("hello \xc3\xa9 \xff");
  m->set_type(parley::v2::CIPHER_TYPE_PREKEY_MESSAGE);
  m->set_recipient_registration_id(1234);
  out.push_back(f.SerializeAsString());
  f.Clear();
  auto* u = f.mutable_upload_keys();
  u->set_identity_key("\x05" + std::string(32, 'i'));
  u->set_registration_id(99);
  u->mutable_signed_prekey()->set_id(3);
  u->mutable_signed_prekey()->set_public_key("\x05" + std::string(32, 's'));
  u->mutable_signed_prekey()->set_signature(std::string(64, 'g'));
  for (std::uint32_t i = 1; i <= 3; ++i) {
    auto* k = u->add_one_time_prekeys();
    k->set_id(i);
    k->set_public_key("\x05" + std::string(32, static_cast<char>('a' + i)));
  }
  out.push_back(f.SerializeAsString());
  f.Clear();
  f.mutable_fetch_keys()->set_username("bob");
  out.push_back(f.SerializeAsString());
  f.Clear();
  for (std::uint64_t i = 0; i < 5; ++i) {
    auto* c = f.mutable_ack()->add_cursors();
    c->set_chat_id(1000 + i);
    c->set_seq(7 * i + 1);
  }
  out.push_back(f.SerializeAsString());
  f.Clear();
  f.mutable_mark_read()->set_chat_id(1001);
  f.mutable_mark_read()->set_up_to_seq(40);
  out.push_back(f.SerializeAsString());
  f.Clear();
  f.mutable_get_status()->set_chat_id(1002);
  f.mutable_get_status()->set_seq(3);
  out.push_back(f.SerializeAsString());
  f.Clear();
  f.mutable_get_history()->set_chat_id(1003);
  f.mutable_get_history()->set_before_seq(90);
  f.mutable_get_history()->set_limit(100);
  out.push_back(f.SerializeAsString());
  f.Clear();
  m = f.mutable_send_message();  // by chat id
  m->set_chat_id(1004);
  m->set_client_msg_id("c2");
  m->set_payload("by chat");
  m->set_type(parley::v2::CIPHER_TYPE_SIGNAL_MESSAGE);
  out.push_back(f.SerializeAsString());
  f.Clear();
  f.mutable_authenticate()->set_device_id(3);
  f.mutable_authenticate()->set_token(std::string(32, 't'));
  out.push_back(f.SerializeAsString());
  f.Clear();
  f.mutable_subscribe_presence()->add_usernames("alice");
  f.mutable_get_history()->set_peer("carol");
  out.push_back(f.SerializeAsString());
  f.Clear();
  f.mutable_envelope()->set_payload("from the server");
  f.mutable_envelope()->set_chat_id(1005);
  f.mutable_envelope()->set_seq(2);
  out.push_back(f.SerializeAsString());
  f.Clear();
  auto* r = f.mutable_receipts()->add_receipts();
  r->set_chat_id(1005);
  r->set_user("bob");
  r->set_status(parley::v2::MESSAGE_STATUS_READ);
  r->set_up_to_seq(2);
  out.push_back(f.SerializeAsString());
  // WebSocket frames: a fragmented message with a ping between, and a close.
  using parley::test_support::ws_client_frame;
  out.push_back(ws_client_frame(0x02, "frag") + ws_client_frame(0x89, "ping") +
                ws_client_frame(0x80, "ment \xc3\xa9", 16) +
                ws_client_frame(0x88, std::string("\x03\xe8") + "bye \xe2\x82\xac", 64));
  return out;
}

}  // namespace

// Usage: frame_codec_fuzz [ITERATIONS]
int main(int argc, char** argv) {
  parley::wire::silence_protobuf_logging();
  const long iterations = argc > 1 ? std::atol(argv[1]) : 200'000;
  std::mt19937_64 rng(20261128);
  const auto corpus = seeds();
  for (long i = 0; i < iterations; ++i) {
    std::string input = corpus[rng() % corpus.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 4) {
        case 0:  // flip a byte
          if (!input.empty()) input[rng() % input.size()] = static_cast<char>(rng());
          break;
        case 1:  // insert a byte
          input.insert(input.begin() + static_cast<std::ptrdiff_t>(rng() % (input.size() + 1)),
                       static_cast<char>(rng()));
          break;
        case 2:  // truncate
          if (!input.empty()) input.resize(rng() % input.size());
          break;
        default:  // splice another seed in
          input += corpus[rng() % corpus.size()].substr(0, rng() % 16);
          break;
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(input.data()), input.size());
  }
  std::printf("frame_codec_fuzz: %ld inputs, no crash\n", iterations);
  return 0;
}
#endif
