#include "bus/bus.hpp"

#include <algorithm>
#include <unordered_map>

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

const wire::encoded_frame& envelope::frame() const {
  std::call_once(encoded_, [this] {
    parley::v2::Frame f;
    to_wire(*message_, *f.mutable_envelope());
    frame_ = wire::encode(f);
  });
  return frame_;
}

std::vector<std::pair<std::uint64_t, std::vector<store::watermark>>> receipts_by_device(
    const std::vector<store::receipt_delivery>& receipts) {
  std::vector<std::pair<std::uint64_t, std::vector<store::watermark>>> by_device;
  std::unordered_map<std::uint64_t, std::size_t> index;  // device -> its place in by_device
  for (const auto& r : receipts) {
    auto [it, added] = index.try_emplace(r.device, by_device.size());
    if (added) by_device.emplace_back(r.device, std::vector<store::watermark>{});
    by_device[it->second].second.push_back(r.mark);
  }
  return by_device;
}

std::vector<wire::encoded_frame> receipts_frames(const std::vector<store::watermark>& marks) {
  std::vector<wire::encoded_frame> out;
  std::uint64_t stamp = 0;
  for (const auto& m : marks) stamp = std::max(stamp, m.stamp);
  for (std::size_t i = 0; i < marks.size(); i += receipts_per_frame) {
    parley::v2::Frame f;
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
