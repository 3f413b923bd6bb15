#include "bus/bus.hpp"

namespace parley::bus {

const wire::encoded_frame& envelope::frame() const {
  std::call_once(encoded_, [this] {
    const auto& m = *message_;
    parley::v2::Frame f;
    auto* e = f.mutable_envelope();
    e->set_chat_id(m.chat);
    e->set_seq(m.seq);
    e->set_message_id(m.id);
    e->set_from(m.sender_name);
    e->set_from_device(m.sender_device);
    e->set_sent_at_ms(m.sent_at_ms);
    e->set_payload(m.payload);
    e->set_type(static_cast<parley::v2::CipherType>(m.cipher_type));
    frame_ = wire::encode(f);
  });
  return frame_;
}

}  // namespace parley::bus
