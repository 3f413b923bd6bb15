#include "server/event_frames.hpp"

namespace parley::server {

wire::encoded_frame encode_event(const store::device_event& event) {
  parley::v1::Frame f;
  if (const auto* m = std::get_if<store::message_event>(&event)) {
    auto* e = f.mutable_envelope();
    e->set_event_id(m->event);
    e->set_message_id(m->id);
    e->set_seq(m->seq);
    e->set_from(m->from);
    e->set_from_device(m->from_device);
    e->set_sent_at_ms(m->sent_at_ms);
    e->set_payload(m->payload);
    e->set_type(static_cast<parley::v1::CipherType>(m->cipher_type));
  } else {
    const auto& r = std::get<store::receipt_event>(event);
    auto* e = f.mutable_receipt();
    e->set_event_id(r.event);
    e->set_message_id(r.id);
    e->set_peer(r.peer);
    e->set_status(static_cast<parley::v1::MessageStatus>(r.status));
    e->set_at_ms(r.at_ms);
  }
  return wire::encode(f);
}

store::event_id event_id_of(const store::device_event& event) {
  return std::visit([](const auto& e) { return e.event; }, event);
}

void route_deliveries(bus::bus& bus, const std::vector<store::delivery>& deliveries) {
  for (const auto& d : deliveries)
    bus.deliver(d.device, event_id_of(d.event), encode_event(d.event));
}

}  // namespace parley::server
