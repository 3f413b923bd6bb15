#include "load_peer.hpp"

namespace parley::bench {

namespace v1 = parley::v1;

void load_peer::flush_acks() {
  if (acks.empty()) return;
  v1::Frame f;
  auto* a = f.mutable_ack();
  for (auto id : acks) a->add_event_ids(id);
  send(f);
  acks.clear();
}

boost::asio::awaitable<v1::Frame> round_trip(load_peer& p, v1::Frame request) {
  const std::uint64_t id = p.next_request++;
  request.set_request_id(id);
  p.send(request);
  for (;;) {
    auto [ec, bytes] = co_await p.ws->read();
    if (ec) co_return v1::Frame{};
    v1::Frame f;
    if (f.ParseFromString(bytes) && f.request_id() == id) co_return f;
  }
}

boost::asio::awaitable<bool> set_up(load_peer& p, std::string url, std::string source,
                                    bool register_first) {
  if (co_await p.ws->connect(url, std::chrono::seconds(20), source)) co_return false;
  if (register_first) {
    v1::Frame reg;
    reg.mutable_register_()->set_username(p.username);
    auto r = co_await round_trip(p, reg);
    if (!r.has_registered()) co_return false;
    p.device = r.registered().device_id();
    p.token = r.registered().token();
  }
  v1::Frame auth;
  auth.mutable_authenticate()->set_device_id(p.device);
  auth.mutable_authenticate()->set_token(p.token);
  auto a = co_await round_trip(p, auth);
  if (!a.has_authenticated()) co_return false;
  for (;;) {
    auto [ec, bytes] = co_await p.ws->read();
    if (ec) co_return false;
    v1::Frame f;
    if (f.ParseFromString(bytes) && f.has_queue_empty()) co_return true;
  }
}

std::string source_address(std::size_t n) { return "127.0.0." + std::to_string(2 + n % 253); }

}  // namespace parley::bench
