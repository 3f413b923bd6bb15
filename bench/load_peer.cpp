#include "load_peer.hpp"

#include <algorithm>

namespace parley::bench {

namespace v2 = parley::v2;

void load_peer::received(std::uint64_t chat_id, std::uint64_t seq) {
  for (auto& [chat, highest] : acks) {
    if (chat == chat_id) {
      highest = std::max(highest, seq);
      return;
    }
  }
  acks.emplace_back(chat_id, seq);
}

void load_peer::keep_receipts_stamp(std::uint64_t stamp) {
  receipts_stamp = std::max(receipts_stamp, stamp);
}

void load_peer::flush_acks() {
  constexpr std::size_t max_cursors = 1'024;  // the server's limit per Ack
  for (std::size_t begin = 0; begin < acks.size(); begin += max_cursors) {
    v2::Frame f;
    auto* a = f.mutable_ack();
    for (std::size_t i = begin; i < std::min(acks.size(), begin + max_cursors); ++i) {
      auto* c = a->add_cursors();
      c->set_chat_id(acks[i].first);
      c->set_seq(acks[i].second);
    }
    send(f);
  }
  acks.clear();
}

boost::asio::awaitable<v2::Frame> round_trip(load_peer& p, v2::Frame request) {
  const std::uint64_t id = p.next_request++;
  request.set_request_id(id);
  p.send(request);
  for (;;) {
    auto [ec, bytes] = co_await p.ws->read();
    if (ec) co_return v2::Frame{};
    v2::Frame f;
    if (f.ParseFromString(bytes) && f.request_id() == id) co_return f;
  }
}

boost::asio::awaitable<bool> set_up(load_peer& p, std::string url, std::string source,
                                    bool register_first, bool note_drain) {
  p.drained = p.receipts = 0;
  if (co_await p.ws->connect(url, std::chrono::seconds(20), source)) co_return false;
  if (register_first) {
    v2::Frame reg;
    reg.mutable_register_()->set_username(p.username);
    auto r = co_await round_trip(p, reg);
    if (!r.has_registered()) co_return false;
    p.device = r.registered().device_id();
    p.token = r.registered().token();
  }
  v2::Frame auth;
  auth.mutable_authenticate()->set_device_id(p.device);
  auth.mutable_authenticate()->set_token(p.token);
  auth.mutable_authenticate()->set_receipts_since(p.receipts_stamp);
  auto a = co_await round_trip(p, auth);
  if (!a.has_authenticated()) co_return false;
  std::uint64_t highest = 0;  // the highest Receipts.stamp of this session before QueueEmpty
  for (;;) {
    auto [ec, bytes] = co_await p.ws->read();
    if (ec) co_return false;
    v2::Frame f;
    if (!f.ParseFromString(bytes)) continue;
    if (note_drain && f.has_envelope()) p.received(f.envelope().chat_id(), f.envelope().seq());
    if (f.has_receipts()) {
      p.receipts += static_cast<std::uint64_t>(f.receipts().receipts_size());
      highest = std::max(highest, f.receipts().stamp());
    }
    if (f.has_queue_empty()) {
      p.drained = f.queue_empty().drained();
      p.keep_receipts_stamp(std::max(highest, f.queue_empty().receipts_stamp()));
      co_return true;
    }
  }
}

std::string source_address(std::size_t n) { return "127.0.0." + std::to_string(2 + n % 253); }

}  // namespace parley::bench
