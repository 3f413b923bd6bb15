#include "bus/bus.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "wire/scratch_arena.hpp"

namespace parley::bus {

void to_wire(const store::chat_message& m, parley::v2::Envelope& e) {
  e.set_chat_id(m.chat);
  e.set_seq(m.seq);
  e.set_message_id(m.id);
  e.set_from(m.sender_name);
  e.set_from_device(m.sender_device);
  e.set_sent_at_ms(m.sent_at_ms);
  e.set_payload(m.payload);
  e.set_type(static_cast<parley::v2::CipherType>(m.cipher_type));
  if (m.event) {
    auto* g = e.mutable_event();
    g->set_change(static_cast<parley::v2::GroupChange>(m.event->change));
    g->set_user(m.event->user);
    g->set_name(m.event->name);
    for (const auto& member : m.event->members) g->add_members(member);
  }
}

namespace {

// Protocol Buffers' wire format, for the one frame written by hand (encode_envelope).
constexpr std::uint32_t varint = 0;
constexpr std::uint32_t length_delimited = 2;

constexpr std::size_t varint_bytes(std::uint64_t v) {
  std::size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

void put_varint(std::string& out, std::uint64_t v) {
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>((v & 0x7f) | 0x80));
  out.push_back(static_cast<char>(v));
}

constexpr std::uint64_t tag(std::uint32_t field, std::uint32_t wire_type) {
  return (static_cast<std::uint64_t>(field) << 3) | wire_type;
}

// A field as proto3 writes it (nothing for a zero or empty value): its size, or the bytes.
std::size_t varint_field_bytes(std::uint32_t field, std::uint64_t v) {
  return v == 0 ? 0 : varint_bytes(tag(field, varint)) + varint_bytes(v);
}
std::size_t bytes_field_bytes(std::uint32_t field, std::size_t size) {
  return size == 0 ? 0 : varint_bytes(tag(field, length_delimited)) + varint_bytes(size) + size;
}
void put_varint_field(std::string& out, std::uint32_t field, std::uint64_t v) {
  if (v == 0) return;
  put_varint(out, tag(field, varint));
  put_varint(out, v);
}
void put_bytes_field(std::string& out, std::uint32_t field, std::string_view bytes) {
  if (bytes.empty()) return;
  put_varint(out, tag(field, length_delimited));
  put_varint(out, bytes.size());
  out.append(bytes);
}

// Frame{envelope = 50: Envelope{1 chat_id, 2 seq, 3 message_id, 4 from, 5 from_device,
// 6 sent_at_ms, 7 payload, 8 type}} for a message without a group event, byte for byte what
// SerializeAsString gives (fields in number order, proto3 defaults left out; test
// envelope.hand_encoding_matches_protobufs), into one string of the exact size: no Frame is
// built and the payload is copied once, into the frame, instead of twice.
std::string encode_plain_envelope(const store::chat_message& m) {
  constexpr std::uint32_t frame_envelope = 50;
  // An enum is an int32 on the wire, sign-extended to 64 bits as protobuf does (the codec
  // only lets the known, positive values in; stored values are passed on as they are).
  const auto type = static_cast<std::uint64_t>(
      static_cast<std::int64_t>(static_cast<std::int32_t>(m.cipher_type)));
  const std::size_t body =
      varint_field_bytes(1, m.chat) + varint_field_bytes(2, m.seq) + varint_field_bytes(3, m.id) +
      bytes_field_bytes(4, m.sender_name.size()) + varint_field_bytes(5, m.sender_device) +
      varint_field_bytes(6, m.sent_at_ms) + bytes_field_bytes(7, m.payload.size()) +
      varint_field_bytes(8, type);
  std::string out;
  // An empty Envelope is still written: the frame's body is set.
  out.reserve(varint_bytes(tag(frame_envelope, length_delimited)) + varint_bytes(body) + body);
  put_varint(out, tag(frame_envelope, length_delimited));
  put_varint(out, body);
  put_varint_field(out, 1, m.chat);
  put_varint_field(out, 2, m.seq);
  put_varint_field(out, 3, m.id);
  put_bytes_field(out, 4, m.sender_name);
  put_varint_field(out, 5, m.sender_device);
  put_varint_field(out, 6, m.sent_at_ms);
  put_bytes_field(out, 7, m.payload);
  put_varint_field(out, 8, type);
  return out;
}

}  // namespace

std::string encode_envelope(const store::chat_message& m) {
  if (!m.event) return encode_plain_envelope(m);
  parley::v2::Frame f;
  to_wire(m, *f.mutable_envelope());
  return f.SerializeAsString();
}

const wire::encoded_frame& envelope::frame() const {
  std::call_once(encoded_, [this] {
    frame_ = std::make_shared<const std::string>(encode_envelope(*message_));
  });
  return frame_;
}

std::vector<std::pair<std::uint64_t, std::vector<store::watermark>>> receipts_by_device(
    const std::vector<store::receipt_delivery>& receipts) {
  std::vector<std::pair<std::uint64_t, std::vector<store::watermark>>> by_device;
  // A device's place in by_device: found by a scan while there are few (an ack's receipts
  // usually go to one or two devices: no map to build), by this index past that.
  constexpr std::size_t scanned = 8;
  std::unordered_map<std::uint64_t, std::size_t> index;
  for (const auto& r : receipts) {
    std::size_t at = by_device.size();
    if (index.empty()) {
      for (std::size_t i = 0; i < by_device.size(); ++i) {
        if (by_device[i].first == r.device) {
          at = i;
          break;
        }
      }
    } else if (auto it = index.find(r.device); it != index.end()) {
      at = it->second;
    }
    if (at == by_device.size()) {
      by_device.emplace_back(r.device, std::vector<store::watermark>{});
      if (!index.empty()) {
        index.emplace(r.device, at);
      } else if (by_device.size() > scanned) {
        for (std::size_t i = 0; i < by_device.size(); ++i) index.emplace(by_device[i].first, i);
      }
    }
    by_device[at].second.push_back(r.mark);
  }
  return by_device;
}

std::vector<wire::encoded_frame> receipts_frames(const std::vector<store::watermark>& marks) {
  std::vector<wire::encoded_frame> out;
  std::uint64_t stamp = 0;
  for (const auto& m : marks) stamp = std::max(stamp, m.stamp);
  for (std::size_t i = 0; i < marks.size(); i += receipts_per_frame) {
    wire::scratch_arena scratch;  // the frame ends once encoded
    auto& f = scratch.make<parley::v2::Frame>();
    auto* receipts = f.mutable_receipts();
    const std::size_t end = std::min(marks.size(), i + receipts_per_frame);
    for (std::size_t j = i; j < end; ++j) {
      const auto& m = marks[j];
      auto* r = receipts->add_receipts();
      r->set_chat_id(m.chat);
      r->set_user(m.user);
      r->set_status(static_cast<parley::v2::MessageStatus>(m.status));
      r->set_up_to_seq(m.up_to);
      r->set_at_ms(m.at_ms);
    }
    if (end == marks.size()) receipts->set_stamp(stamp);
    out.push_back(wire::encode(f));
  }
  return out;
}

}  // namespace parley::bus
